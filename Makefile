# The two commands a newcomer needs:  `make demo` (the main job on the examples)  and  `make test`.
# Both create .venv on first use: torch first, as an explicit build (below), then everything else
# pinned by constraints.txt.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
MODEL  ?= $(or $(MLB_MODEL),llava-hf/llava-onevision-qwen2-0.5b-ov-hf)

# Which torch build. PyPI's Linux wheel is the CUDA build (gigabytes of nvidia-* packages), so:
#   - Linux without `nvidia-smi`: the CPU build, `torch==<pin>+cpu` from PyTorch's CPU index;
#   - where `nvidia-smi` runs: PyPI's wheel, the CUDA build; macOS: PyPI's wheel (CPU and MPS).
# Override with TORCH_INDEX=<url> (another PyTorch index, e.g. .../whl/cu128) or TORCH_INDEX= (pip's
# own configuration only). When pip's configuration already provides the exact wheel (a wheel folder
# or a mirror, as on offline machines and in CI), no index is asked at all.
TORCH_VERSION := $(shell sed -n 's/^torch==//p' constraints.txt)
ON_LINUX      := $(filter Linux,$(shell uname -s))
HAVE_NVIDIA   := $(shell command -v nvidia-smi 2>/dev/null)
ifneq ($(ON_LINUX),)
ifeq ($(HAVE_NVIDIA),)
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
endif
endif
TORCH_INDEX ?=
# The local version label pins the build: `<pin>+cpu` exists only as the CPU wheel.
TORCH_SPEC  ?= torch==$(TORCH_VERSION)$(if $(and $(ON_LINUX),$(findstring /whl/cpu,$(TORCH_INDEX))),+cpu)

.PHONY: install demo test test-fast test-lmms-eval lint typecheck completions readme examples bench bench-gpu clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@if [ -n "$(TORCH_INDEX)" ] && ! $(BIN)/python -m pip install --quiet --dry-run --no-deps --no-index \
			"$(TORCH_SPEC)" >/dev/null 2>&1; then \
		echo "installing $(TORCH_SPEC) from $(TORCH_INDEX)"; \
		$(BIN)/python -m pip install --quiet --index-url "$(TORCH_INDEX)" "$(TORCH_SPEC)"; \
	else \
		echo "installing $(TORCH_SPEC) from pip's configured sources"; \
		$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"; \
	fi
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,ray,plot]'
	touch $@

demo: install
	$(BIN)/mlb answer examples/manifest.jsonl --model "$(MODEL)" --method mlb --keep 0.25 --frames 16 \
		--out examples-answers.parquet

test: install
	$(BIN)/python -m pytest -q

# The lmms-eval grader (mlbcli/eval/lmms_eval_grading.py) reply by reply against lmms-eval's own task
# functions. lmms-eval is a test-only dependency that cannot be resolved beside our torch (it wants
# torchvision), so it goes with --no-deps into its own folder, on PYTHONPATH for these test files only.
LMMS_EVAL_DIR := .lmms-eval-test
# What the `python -m lmms_eval` command itself imports (the end-to-end plugin test runs it): aiohttp (its
# LLM judge, imported by the evaluator), pytablewriter (the results table), and filelock 3.x, shadowing our
# filelock 4 on this PYTHONPATH only: lmms-eval 0.7.3's evaluator imports `filelock._api`, gone in filelock 4.
# Defined before LMMS_EVAL_PINS, which `:=` expands at once.
LMMS_EVAL_CLI_PINS := filelock==3.32.7 aiohttp==3.14.5 aiosignal==1.4.0 frozenlist==1.8.0 multidict==7.2.1 \
	yarl==1.25.1 propcache==0.5.4 aiohappyeyeballs==2.7.1 pytablewriter==1.2.1 DataProperty==1.1.1 \
	mbstrdecoder==1.1.5 pathvalidate==3.3.1 tabledata==1.3.5 tcolorpy==0.1.7 typepy==1.3.5 chardet==6.0.0.post1
LMMS_EVAL_PINS := lmms-eval==0.7.3 loguru==0.7.3 pytz==2026.6 datasets==5.2.0 multiprocess==0.70.19 \
	dill==0.4.1 xxhash==4.1.0 accelerate==1.16.0 tenacity==9.2.1 evaluate==0.4.6 sacrebleu==2.6.0 \
	portalocker==4.4.2 tabulate==0.10.0 colorama==0.4.6 lxml==6.2.1 opencv-python-headless==5.1.0.95 \
	$(LMMS_EVAL_CLI_PINS)

$(LMMS_EVAL_DIR)/.installed: Makefile
	rm -rf $(LMMS_EVAL_DIR)
	$(BIN)/python -m pip install --quiet --no-deps --target $(LMMS_EVAL_DIR) $(LMMS_EVAL_PINS)
	touch $@

test-lmms-eval: install $(LMMS_EVAL_DIR)/.installed
	PYTHONPATH=$(CURDIR)/$(LMMS_EVAL_DIR) $(BIN)/python -m pytest -q tests/test_lmms_eval_grading.py tests/test_lmms_eval_plugin.py

# Everything but the tests marked slow (bench smoke runs, plugin installs, Ray, the browser): for quick
# iterations; `make test` (and CI) runs them all.
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install typecheck
	$(BIN)/ruff check mlbcli tests bench examples
	$(BIN)/ruff format --check mlbcli tests bench examples

typecheck: install
	$(BIN)/mypy mlbcli

completions: install
	$(BIN)/python -m mlbcli.cli.completions completions/

# The README's method and hyperparameter tables, generated from the methods' declarations.
readme: install
	$(BIN)/python docs/update_readme.py

# The demo clips, made again into an ignored folder: the encoder stamps each file, so writing over the
# committed examples/clips would leave the tree dirty. `make examples EXAMPLE_CLIPS=examples/clips`
# replaces the committed ones (then commit them).
EXAMPLE_CLIPS ?= build/examples/clips
examples: install
	$(BIN)/python examples/make_clips.py $(EXAMPLE_CLIPS)

bench: install
	$(BIN)/python bench/bench_prefill.py
	$(BIN)/python bench/bench_throughput.py

# The one prepared GPU run (< 8 minutes on an H100/H200): results under bench/results/.
bench-gpu: install
	$(BIN)/python bench/bench_gpu.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache .hypothesis
