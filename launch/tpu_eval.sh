#!/usr/bin/env bash
# Evaluate on a Cloud TPU VM slice (every worker joins, as a slice's hosts must):
# launch/tpu_train.sh with --module=gecko.eval.
#
#   launch/tpu_eval.sh --tpu=gecko-v5e-64 --zone=us-west4-a [--dry_run] \
#     -- --gin_file=gin/runs/eval.gin --gin.CHECKPOINT="'gs://BUCKET/runs/ft1/export'" \
#        --gin.DATA_DIR="'gs://BUCKET/eval_data'" --gin.OUTPUT_DIR="'gs://BUCKET/eval/ft1'"
set -euo pipefail
exec "$(dirname "$0")/tpu_train.sh" --module=gecko.eval "$@"
