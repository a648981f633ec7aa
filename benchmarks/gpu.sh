#!/usr/bin/env bash
# GPU figures in one prepared run (BENCHMARKS.md, "On a GPU"): MiniLM encode and train
# step in fp32 and bf16 (attention: the reference XLA path and cuDNN's fused kernel),
# the 1.2B (gecko_1b) train step in bf16, each with MFU against the chip's measured
# matmul peak, and the torch model sentence-transformers wraps on the same GPU.
#
#   benchmarks/gpu.sh            # on the GPU machine, from the repository root
#   benchmarks/gpu.sh --smoke    # tiny sizes: checks the script on a CPU (CI runs it)
#
# It installs nothing and pins nothing: it runs the machine's python3 with its own jax
# (CUDA) and torch. JAX and torch run in separate processes (JAX's preallocation off),
# each with the same matmul precision (strict fp32 rows, bf16 rows). Figures go to $OUT
# (default /tmp/gecko-gpu): gpu.json (merged), jax.json, torch.json, log.txt,
# nvidia-smi.txt. Each part has its own time limit (JAX_SECONDS, default 330;
# TORCH_SECONDS, default 120), so the whole run stays under 8 minutes.
#
#   GPU_PARTS=profile benchmarks/gpu.sh   # where the bf16 encode's time goes, kernel by kernel
#
# runs benchmarks/gpu_profile.py: ours once per line of PROFILE_XLA_FLAGS (the first, empty
# line: XLA's defaults), then torch, then a side-by-side table; profile-*.json and the
# compiled HLO (profile-jax-N.hlo.txt) go to $OUT. About 2 minutes (PROFILE_SECONDS per run).
set -uo pipefail
OUT=${OUT:-/tmp/gecko-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
PY=${PY:-python3}
declare -A LIMIT=([jax]=${JAX_SECONDS:-330} [torch]=${TORCH_SECONDS:-120}
                  [profile]=${PROFILE_SECONDS:-150})
DEFAULT_VARIANTS=$'\n--xla_gpu_enable_triton_gemm=false\n--xla_gpu_enable_cublaslt=true'
PROFILE_XLA_FLAGS=${PROFILE_XLA_FLAGS-$DEFAULT_VARIANTS}  # one run per line; empty: defaults
ARGS=("$@")  # --smoke, --repeats N: passed to both parts
SMOKE=false
for arg in "$@"; do [[ "$arg" == --smoke ]] && SMOKE=true; done
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version --format=csv \
    2>&1 || echo "nvidia-smi: not found"
  "$PY" -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, torch.cuda.is_available())" 2>&1
} | tee "$OUT/nvidia-smi.txt"
if ! $SMOKE && ! "$PY" -c \
    "import jax, sys; sys.exit(jax.devices()[0].platform != 'gpu')" 2>/dev/null; then
  echo "gpu.sh: jax sees no GPU here (pip install -e '.[gpu]' on a GPU machine); nothing measured." \
    | tee -a "$OUT/log.txt"
  exit 1
fi
run_logged() {  # run_logged LABEL SECONDS COMMAND...: logged; a failure is said and returned
  echo "== $1 $(date -u +%T)" | tee -a "$OUT/log.txt"
  timeout "$2" "${@:3}" 2>&1 | tee -a "$OUT/log.txt"
  local rc=${PIPESTATUS[0]}
  ((rc == 0)) || { echo "gpu.sh: $1 exited $rc" | tee -a "$OUT/log.txt"; return 1; }
}
run_part() {
  run_logged "$1" "${LIMIT[$1]}" "$PY" benchmarks/gpu_step.py --part="$1" --json "$OUT/$1.json" \
    "${ARGS[@]}"
}
profile() {  # ours under each line of PROFILE_XLA_FLAGS, then torch, then the table
  local flags words xla i=0 files=() smoke=()
  $SMOKE && smoke=(--smoke --repeats 1 --calls 1)
  while IFS= read -r flags; do
    read -r -a words <<< "${XLA_FLAGS:-} $flags"  # the caller's flags and this line's
    xla="${words[*]}"
    run_logged "profile jax, XLA_FLAGS='$xla'" "${LIMIT[profile]}" \
      env -u XLA_FLAGS ${xla:+"XLA_FLAGS=$xla"} "$PY" benchmarks/gpu_profile.py \
      --framework=jax --json "$OUT/profile-jax-$i.json" "${smoke[@]}" \
      && files+=("$OUT/profile-jax-$i.json") || status=1
    i=$((i + 1))
  done <<< "$PROFILE_XLA_FLAGS"
  run_logged "profile torch" "${LIMIT[profile]}" "$PY" benchmarks/gpu_profile.py \
    --framework=torch --json "$OUT/profile-torch.json" "${smoke[@]}" \
    && files+=("$OUT/profile-torch.json") || status=1
  ((${#files[@]})) && "$PY" benchmarks/gpu_profile.py --compare "${files[@]}" 2>&1 \
    | tee -a "$OUT/log.txt"
}
status=0
read -r -a PARTS <<< "${GPU_PARTS:-jax torch}"  # e.g. GPU_PARTS=jax to rerun one part
if [[ " ${PARTS[*]} " == *" profile "* ]]; then  # alone: nothing is timed beside it
  profile
  PARTS=("${PARTS[@]/profile}")
  read -r -a PARTS <<< "${PARTS[*]}"
fi
if $SMOKE; then  # on a CPU the parts, mostly single-threaded start-up, run side by side
  pids=()
  for part in "${PARTS[@]}"; do run_part "$part" & pids+=("$!"); done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
else  # on the GPU one at a time, so that neither is timed beside the other
  for part in "${PARTS[@]}"; do run_part "$part" || status=1; done
fi
parts=()
for part in "${PARTS[@]}"; do [[ -s "$OUT/$part.json" ]] && parts+=("$OUT/$part.json"); done
((${#parts[@]})) && "$PY" benchmarks/gpu_step.py --part=report --json "$OUT/gpu.json" \
  "${parts[@]}" 2>&1 | tee -a "$OUT/log.txt"
exit $status
