#!/usr/bin/env bash
# GPU check (issue 7): the GPU's name, then the fast PSF engine's stamps/s and one short
# FocusNet training epoch on CUDA and on the CPU, and the CUDA / CPU ratios
# (benchmarks/gpu_check.py).  Sized for well under 5 minutes; on a machine without CUDA it
# says so and measures the CPU only.
#
#   benchmarks/gpu_check.sh [--quick] [--json OUT] [--cpu-threads N] [...]   (see --help)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

echo "== GPU"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
        || echo "nvidia-smi: present but failed"
else
    echo "nvidia-smi: not found"
fi
"$PY" -c 'import torch
ok = torch.cuda.is_available()
print("torch", torch.__version__, "| CUDA", torch.version.cuda, "| available:", ok,
      "|", torch.cuda.get_device_name(0) if ok else "no CUDA device")'

echo "== fast engine and FocusNet epoch, CUDA vs CPU"
exec "$PY" -m benchmarks.gpu_check "$@"
