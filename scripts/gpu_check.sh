#!/usr/bin/env bash
# On a machine with an NVIDIA GPU: train one short task in bf16 with our engine and with a plain transformers
# Trainer, then (when vLLM's CUDA build is installed) serve the default model on vllm with two adapters;
# prints what it measured (scripts/gpu_check.py says how). Figures go in docs/benchmarks.md.
#   scripts/gpu_check.sh [--model DIR] [--epochs 3] [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
exec env PYTHONUNBUFFERED=1 "$PY" scripts/gpu_check.py "$@"
