#!/usr/bin/env bash
# Prepare what the offline GPU machine (Python 3.12, torch preinstalled, older transformers) needs to
# run `bench/bench_gpu.py` and `pytest -m gpu`: pure-Python / abi3 wheels for cp312, under 64 MiB,
# in gpu-wheels/ (git-ignored; give it as the run's carry). On the GPU machine:
#   pip install --no-deps --target /tmp/mlb-site gpu-wheels/*.whl
#   PYTHONPATH=/tmp/mlb-site:. python bench/bench_gpu.py          # writes bench/results/gpu-*.{json,md}
#   PYTHONPATH=/tmp/mlb-site:. python -m pytest -m gpu tests/test_gpu.py -q
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf gpu-wheels && mkdir gpu-wheels
pins() { sed -n "s/^$1==//p" constraints.txt; }
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d gpu-wheels \
    "transformers==$(pins transformers)" "tokenizers==$(pins tokenizers)" \
    "huggingface_hub==$(pins huggingface_hub)" "safetensors==$(pins safetensors)"
du -sh gpu-wheels && ls gpu-wheels
