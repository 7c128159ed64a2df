#!/usr/bin/env bash
# N training processes on this machine, joined by jax.distributed on 127.0.0.1 (what a
# multi-host pod does, on one box). Every argument after N goes to cnn_history.main.
#
#   launch/local.sh 2 --config=configs/lenet5.py --workdir=/tmp/run [--config.x=...]
#
# Each process sees the devices XLA gives it (on a CPU, set
# XLA_FLAGS=--xla_force_host_platform_device_count=K for K devices per process). The logs of
# process i are prefixed with [i]; if one process fails the others are stopped and the exit
# status is that failure's.
set -euo pipefail
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NUM_PROCESSES [cnn_history.main flags...]" >&2
  exit 2
fi
N=$1
shift
PYTHON=${PYTHON:-python}
PORT=${PORT:-$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
for ((i = 0; i < N; i++)); do
  ( "$PYTHON" -m cnn_history.main --distributed --coordinator_address="127.0.0.1:$PORT" \
      --num_processes="$N" --process_id="$i" "$@" 2>&1 | sed -u "s/^/[$i] /" ) &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || { status=$?; cleanup; }
done
trap - EXIT
exit "$status"
