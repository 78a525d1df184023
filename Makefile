# The two commands a newcomer needs:  `make demo` (the main job on the examples)  and  `make test`.
# Both create .venv on first use: torch is installed first, pinned to the CPU build, because an
# unpinned torch pulls gigabytes of CUDA packages; everything else comes from constraints.txt.

PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
MODEL  ?= $(or $(MLB_MODEL),llava-hf/llava-onevision-qwen2-0.5b-ov-hf)

.PHONY: install demo test lint completions examples bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "torch==$$(sed -n 's/^torch==//p' constraints.txt)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

demo: install
	$(BIN)/mlb answer examples/manifest.jsonl --model "$(MODEL)" --method mlb --keep 0.25 --frames 16 \
		--out examples-answers.parquet

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check mlbcli tests bench examples
	$(BIN)/ruff format --check mlbcli tests bench examples

completions: install
	$(BIN)/python -m mlbcli.completions completions/

examples: install
	$(BIN)/python examples/make_clips.py examples/clips

bench: install
	$(BIN)/python bench/bench_prefill.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
