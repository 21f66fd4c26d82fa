#!/usr/bin/env bash
# GPU benchmark of the DID engine, for sessions lent a GPU (H100/H200). Under ~5 minutes.
#
#   benchmarks/gpu.sh [--device cuda|cpu] [--quick] [--no-compile] [--out FILE.json]
#
# Measures the per-iteration time of the paper-sized U-Net at 512x512 (eager fp32,
# channels-last, bf16 autocast, torch.compile; target <= 5 ms on an H100), whole robust/fast
# curves on the device (target <= 0.5 s) and a device-vs-CPU check of the candidates, then
# prints one summary table (see benchmarks/bench_gpu.py). `--device cpu --quick` tests the
# code paths on a machine without a GPU in about 3.5 minutes (2 CPU cores).
#
# Python: $PYTHON if set, else ./.venv/bin/python, else a venv made here
# (.venv-gpu, --system-site-packages, so the machine's own torch is used: the GPU machine
# has no network, so nothing is installed). ctdid is taken from src/ via PYTHONPATH.
set -euo pipefail
cd "$(dirname "$0")/.."

has_deps() { "$1" -c 'import torch, numpy, scipy' >/dev/null 2>&1; }

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
    if [[ -x .venv/bin/python ]] && has_deps .venv/bin/python; then
        PY=.venv/bin/python
    else
        if [[ ! -x .venv-gpu/bin/python ]]; then
            python3 -m venv --system-site-packages .venv-gpu
        fi
        PY=.venv-gpu/bin/python
    fi
fi
if ! has_deps "$PY"; then
    echo "gpu.sh: $PY cannot import torch, numpy and scipy; set PYTHON to one that can" >&2
    exit 2
fi
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout 330 "$PY" benchmarks/bench_gpu.py "$@"
