#!/usr/bin/env bash
# Train on a Cloud TPU VM slice (single host or a multi-host pod) with queued resources:
# create the slice, install this package on every worker, run cnn_history.main on all of them
# (jax.distributed finds its peers on TPU by itself), and when the slice is preempted (spot),
# create it again and rerun: the run resumes from its last checkpoint in the gs:// workdir.
#
#   launch/tpu.sh --name r50 --zone us-central2-b --accelerator v4-32 \
#       --runtime tpu-ubuntu2204-base --bucket gs://my-bucket --config configs/resnet50.py \
#       [--spot] [--project P] [--attempts 10] [--dry-run] [-- --config.num_epochs=90 ...]
#
# Data: TFDS datasets are read from $BUCKET/tensorflow_datasets (prepare imagenet2012 there
# once with `tfds build`); the workdir is $BUCKET/runs/$NAME unless --workdir is given.
# --dry-run prints every command instead of running it.
set -euo pipefail

NAME="" ZONE="" ACCELERATOR="" RUNTIME="tpu-ubuntu2204-base" BUCKET="" CONFIG="" WORKDIR=""
PROJECT="" SPOT=0 DRY_RUN=0 ATTEMPTS=10 EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    --zone) ZONE=$2; shift 2 ;;
    --accelerator) ACCELERATOR=$2; shift 2 ;;
    --runtime) RUNTIME=$2; shift 2 ;;
    --bucket) BUCKET=${2%/}; shift 2 ;;
    --config) CONFIG=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --project) PROJECT=$2; shift 2 ;;
    --attempts) ATTEMPTS=$2; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done
for var in NAME ZONE ACCELERATOR BUCKET CONFIG; do
  if [ -z "${!var}" ]; then
    echo "missing --$(echo "$var" | tr 'A-Z' 'a-z') (see the header of $0)" >&2
    exit 2
  fi
done
WORKDIR=${WORKDIR:-$BUCKET/runs/$NAME}
TFDS_DIR=$BUCKET/tensorflow_datasets
QR=$NAME-qr
GCLOUD=(gcloud compute tpus)
COMMON=(--zone="$ZONE")
[ -n "$PROJECT" ] && COMMON+=(--project="$PROJECT")

run() {  # prints the command; runs it unless --dry-run
  printf '+ '; printf '%q ' "$@"; echo
  [ "$DRY_RUN" = 1 ] || "$@"
}

on_all_workers() {  # a shell command on every worker of the slice
  run "${GCLOUD[@]}" queued-resources ssh "$QR" "${COMMON[@]}" --worker=all --node=all \
      --command="$1"
}

create_slice() {
  local spot=()
  [ "$SPOT" = 1 ] && spot=(--spot)
  run "${GCLOUD[@]}" queued-resources create "$QR" "${COMMON[@]}" --node-id="$NAME" \
      --accelerator-type="$ACCELERATOR" --runtime-version="$RUNTIME" "${spot[@]}"
  [ "$DRY_RUN" = 1 ] && return 0
  while true; do  # ACCEPTED/PROVISIONING -> ACTIVE
    state=$("${GCLOUD[@]}" queued-resources describe "$QR" "${COMMON[@]}" \
            --format='value(state.state)')
    echo "queued resource $QR: $state"
    case "$state" in
      ACTIVE) return 0 ;;
      FAILED|SUSPENDED) return 1 ;;
    esac
    sleep 30
  done
}

install() {
  local tarball=/tmp/cnn_history-$NAME.tar.gz
  run git -C "$(dirname "$0")/.." archive --format=tar.gz -o "$tarball" HEAD
  run "${GCLOUD[@]}" tpu-vm scp "$tarball" "$NAME:cnn_history.tar.gz" "${COMMON[@]}" --worker=all
  on_all_workers "mkdir -p cnn_history && tar xzf cnn_history.tar.gz -C cnn_history && \
pip install -q 'jax[tpu]' -e ./cnn_history"
}

train() {
  local extra
  extra=$(printf '%q ' "${EXTRA[@]}")
  on_all_workers "cd cnn_history && TF_CPP_MIN_LOG_LEVEL=2 python -m cnn_history.main \
--distributed --config=$CONFIG --workdir=$WORKDIR --config.data.tfds_dir=$TFDS_DIR \
--config.data.download=False $extra"
}

finished() {  # summary.json written and not by a preempted run
  [ "$DRY_RUN" = 1 ] && return 0
  gsutil -q cat "$WORKDIR/summary.json" 2>/dev/null | grep -q '"preempted": false'
}

delete_slice() {
  run "${GCLOUD[@]}" queued-resources delete "$QR" "${COMMON[@]}" --force --quiet || true
}

for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
  echo "== attempt $attempt of $ATTEMPTS: $NAME ($ACCELERATOR), workdir $WORKDIR"
  if create_slice && install && train && finished; then
    echo "== done: $WORKDIR/summary.json"
    delete_slice
    exit 0
  fi
  echo "== not finished (preempted or failed): recreating the slice; the run resumes"
  delete_slice
done
echo "gave up after $ATTEMPTS attempts" >&2
exit 1
