#!/usr/bin/env bash
# GPU timings beside benchmarks/gpu_check.sh: the CUDA tests (tests/test_cuda.py), the forward
# fit of the 10,000-frame campaign on CUDA and on the machine's CPU cores
# (benchmarks/forward_bft.py --timing-device), and the shipped model's pretraining recipe
# (plato_cnn/data/default_model/model.json "reproduce") on CUDA.  Results under OUT_DIR.
#
#   benchmarks/gpu_timings.sh OUT_DIR DATASET [EPOCHS]
#
# DATASET: a `plato-sim generate` folder; EPOCHS (default 20, the recipe's) of at most 240
# steps of 256 samples.  Each step runs even if an earlier one failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=$1
DATA=$2
EPOCHS=${3:-20}
NCPU=$(nproc)
mkdir -p "$OUT"
step() { echo "== $1 ($(date -u +%T))"; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

step "GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c 'import torch; print("torch", torch.__version__, "| CUDA", torch.version.cuda,
"| available:", torch.cuda.is_available())'

step "CUDA tests"
"$PY" -m pytest -q -s -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$OUT/pytest_cuda.log"

step "forward fit of the 10,000-frame campaign on cuda"
"$PY" -m benchmarks.forward_bft --skip-accuracy --timing-device cuda --timing-threads "$NCPU" \
    --cache out/gpu_cache --json "$OUT/forward_timing_cuda.json"

step "pretraining recipe on cuda, $EPOCHS epochs"
t0=$(date +%s%N)
"$PY" -m plato_cnn.cli pretrain --data "$DATA" --out out/gpu_pretrain --epochs "$EPOCHS" \
    --max-steps-per-epoch 240 --lr 1e-3 --workers 4 --device cuda 2>&1 | tail -n 30
echo "pretraining wall $(ms_since "$t0") ms, $EPOCHS epochs" | tee "$OUT/pretrain_timing.log"
cp out/gpu_pretrain/model.json "$OUT/pretrain_model.json" || true
cp out/gpu_pretrain/log.csv "$OUT/pretrain_log.csv" || true

step "forward fit of the 10,000-frame campaign on $NCPU CPU threads"
"$PY" -m benchmarks.forward_bft --skip-accuracy --timing-device cpu --timing-threads "$NCPU" \
    --cache out/gpu_cache --json "$OUT/forward_timing_cpu.json"
step "done"
