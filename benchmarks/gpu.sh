#!/usr/bin/env bash
# GPU figures in one prepared run (BENCHMARKS.md, "On a GPU"): MiniLM encode and train
# step in fp32 and bf16, the 1.2B (gecko_1b) train step in bf16 at the largest batch
# that fits, each with MFU against the chip's measured matmul peak, and the torch
# model sentence-transformers wraps on the same GPU.
#
#   benchmarks/gpu.sh            # on the GPU machine, from the repository root
#   benchmarks/gpu.sh --smoke    # tiny sizes: checks the script on a CPU
#
# It installs nothing: it uses the machine's python3 with its jax (CUDA) and torch, and
# says so and stops if jax sees no GPU. Figures go to $OUT (default /tmp/gecko-gpu):
# gpu.json, log.txt, nvidia-smi.txt.
set -uo pipefail
OUT=${OUT:-/tmp/gecko-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv \
    2>&1 || echo "nvidia-smi: not found"
  "$PY" -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1
} | tee "$OUT/nvidia-smi.txt"
if [[ "${1:-}" != "--smoke" ]] && ! "$PY" -c \
    "import jax, sys; sys.exit(jax.devices()[0].platform != 'gpu')" 2>/dev/null; then
  echo "gpu.sh: jax sees no GPU here (install jax[cuda12] on this machine); nothing measured." \
    | tee -a "$OUT/log.txt"
  exit 1
fi
"$PY" benchmarks/gpu_step.py --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/log.txt"
