#!/usr/bin/env bash
# Recipes that train the encoder, where a GPU makes whole epochs of it affordable: each is built by
# `genret index` on the GPU and measured by one `genret eval` beside dense, BM25 and HYBRID.
#   bash integration/bench/gpu_recipes.sh DATA QUERY_CACHE WORK
# DATA: a BEIR folder with train and dev qrels (SciFact). QUERY_CACHE: a query cache with every
# document's generated candidates (copied into WORK, so no generator runs). WORK gets the embedded Qdrant
# store, the indexes, and run/ with each stage's log and results/eval-<collection>-<split>-<recipe>.
# {json,md}. The recipes build side by side, each on its own copy of the store (one build leaves a GPU
# mostly idle), each with the defaults plus its flags:
#   frozen   (none: the default recipe)          enc      --no-freeze-encoder (the whole encoder trains)
#   top2     --train-encoder-layers 2            encq     --no-freeze-encoder --queries-from DATA
#   frozenq  --queries-from DATA
# Recipes with training queries are measured on dev-unseen (integration/bench/unseen_queries.py) and dev.
# Stages as in stages.sh (GPU_RUN_STAGES=load,enc,...; GPU_RUN_ARCHIVE). DEVICE (default cuda), PYTHON
# (default python3), INDEX_FLAGS (added to every build) and RECIPE_SECONDS (each build's limit, default
# 900) change how it runs.
set -uo pipefail
if [ $# -ne 3 ] || [ ! -f "$1/corpus.jsonl" ] || [ ! -f "$2" ]; then
  echo "usage: $0 DATA QUERY_CACHE WORK (DATA: a BEIR folder; QUERY_CACHE: a query cache file)" >&2
  exit 2
fi
data=$1 cache=$2 work=$3
out=$work/run
mkdir -p "$out/results"
cp "$cache" "$work/queries.jsonl"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
export JAX_PLATFORMS=cpu  # bm25s may import JAX, which would otherwise take most of the GPU's memory
source "$(dirname "$0")/stages.sh"
py=${PYTHON:-python3}
dev=${DEVICE:-cuda}
coll=$(basename "$data")
store="--qdrant-path $work/qdrant --collection $coll"  # paths without spaces
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}  # per build: they share the cores

recipe() {  # name eval-splits index-flags...
  local r=$1 splits=$2
  shift 2
  local store="--qdrant-path $work/qdrant-$r --collection $coll"
  rm -rf "$work/qdrant-$r" && cp -r "$work/qdrant" "$work/qdrant-$r" || return
  $py -m genret.cli index $store --docid-key "genret_docid_$r" --index-dir "$work/idx-$r" --device "$dev" \
    --query-cache "$work/queries.jsonl" ${INDEX_FLAGS:-} "$@" || return
  for split in $splits; do
    local src=$data
    [ "$split" = dev-unseen ] && src=$work/unseen
    $py -m genret.cli eval $store --docid-key "genret_docid_$r" --index-dir "$work/idx-$r" --device "$dev" \
      --data "$src" --split "$split" --tenant "$coll" --name "eval-$coll-$split-$r" --out "$out/results" || return
  done
}

export py dev work data coll out
export -f recipe

stage info 30 bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null;
  $py -c 'import torch, transformers; print(torch.__version__, transformers.__version__,
  torch.cuda.get_device_name() if torch.cuda.is_available() else \"cpu\")'"
stage load 120 bash -c "$py -m genret.cli load $store --data $data --tenant $coll --device $dev &&
  $py $(dirname "$0")/unseen_queries.py --data $data --out $work/unseen"
limit=${RECIPE_SECONDS:-900}
stage enc "$limit" bash -c "recipe enc dev --no-freeze-encoder" &
stage encq "$limit" bash -c "recipe encq 'dev-unseen dev' --no-freeze-encoder --queries-from $data" &
stage frozen "$limit" bash -c "recipe frozen dev" &
stage top2 "$limit" bash -c "recipe top2 dev --train-encoder-layers 2" &
stage frozenq "$limit" bash -c "recipe frozenq 'dev-unseen dev' --queries-from $data" &
wait
cat "$out/stages.txt"
