#!/usr/bin/env bash
# Train (or evaluate) Gecko on a Cloud TPU VM slice, every host at once.
#
#   launch/tpu_train.sh --tpu=gecko-v5e-64 --zone=us-west4-a \
#     [--project=PROJECT] [--create --accelerator_type=v5litepod-64 \
#      --version=v2-alpha-tpuv5-lite [--spot]] [--remote_dir=gecko] [--dry_run] \
#     -- --gin_file=gin/experiments/minilm_finetune.gin \
#        --gin.MODEL_DIR="'gs://BUCKET/runs/ft1'" --gin.TASK_DATA_DIR="'gs://BUCKET/data'"
#
# Steps (each idempotent, so a rerun after a failure picks up where it stopped):
#   1. with --create: create the slice unless it exists (gcloud compute tpus tpu-vm create);
#   2. copy this checkout's committed tree (git archive HEAD) to every worker and
#      `pip install -e ".[tpu]"` there, skipped when that commit is already installed;
#   3. run `python3 -m gecko.train --multihost ARGS...` on --worker=all (JAX finds the
#      other hosts of the slice by itself); `gecko.eval` runs on worker 0 alone.
# Everything after `--` is passed to the entry point unchanged, each argument quoted
# for the remote shell, so gin overrides such as --gin.MODEL_DIR="'gs://b/x'" arrive
# exactly as typed. --module=gecko.eval (or launch/tpu_eval.sh) runs an evaluation.
# --dry_run prints every command instead of running it.
set -euo pipefail

usage() {
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

TPU="" ZONE="" PROJECT="" ACCELERATOR_TYPE="" VERSION="" SPOT=false CREATE=false
REMOTE_DIR="gecko" MODULE="gecko.train" DRY_RUN=false
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

# 1. The slice, created unless it exists.
if $CREATE; then
  create=("${GCLOUD[@]}" create "$TPU" "${WHERE[@]}" "--accelerator-type=$ACCELERATOR_TYPE"
          "--version=$VERSION")
  if $SPOT; then create+=(--spot); fi
  if $DRY_RUN; then
    echo "# unless \`$(printf '%q ' "${GCLOUD[@]}" describe "$TPU" "${WHERE[@]}")\` succeeds:"
    run "${create[@]}"
  elif ! "${GCLOUD[@]}" describe "$TPU" "${WHERE[@]}" >/dev/null 2>&1; then
    run "${create[@]}"
  fi
fi

# 2. The code, on every worker, installed once per commit.
ARCHIVE="gecko-$COMMIT.tar.gz"
run git archive --format=tar.gz -o "/tmp/$ARCHIVE" HEAD
run "${GCLOUD[@]}" scp "/tmp/$ARCHIVE" "$TPU:/tmp/$ARCHIVE" "${WHERE[@]}" --worker=all
DIR_Q="$(remote_quote "$REMOTE_DIR")"
INSTALL="set -e; mkdir -p $DIR_Q; cd $DIR_Q; \
if [ \"\$(cat .installed 2>/dev/null)\" != $COMMIT ]; then \
tar -xzf /tmp/$ARCHIVE && python3 -m pip install -q -e '.[tpu]' && echo $COMMIT > .installed; fi"
run "${GCLOUD[@]}" ssh "$TPU" "${WHERE[@]}" --worker=all "--command=$INSTALL"

# 3. The run: training on all hosts together, evaluation on the first.
if [[ "$MODULE" == gecko.train ]]; then
  RUN="cd $DIR_Q && python3 -m $MODULE --multihost $(remote_quote "${ARGS[@]}")"
  WORKERS=all
else
  RUN="cd $DIR_Q && python3 -m $MODULE $(remote_quote "${ARGS[@]}")"
  WORKERS=0
fi
run "${GCLOUD[@]}" ssh "$TPU" "${WHERE[@]}" "--worker=$WORKERS" "--command=$RUN"
