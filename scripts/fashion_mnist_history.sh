#!/usr/bin/env bash
# The CNN-history benchmark on Fashion-MNIST (configs/fashion_mnist_history.py): trains every
# family (or the ones named as arguments) one after another into $ROOT/<family>/, then builds
# results/fashion_mnist/ (README.md table, curves.png, acc_vs_macs.png).
#
#   scripts/fashion_mnist_history.sh                  # all families
#   scripts/fashion_mnist_history.sh resnet vgg       # a subset
#   STEPS=600 scripts/fashion_mnist_history.sh        # another shared budget
#   TABLE_ONLY=1 scripts/fashion_mnist_history.sh     # rebuild the table from finished runs
#
# A finished family (its summary.json exists) is skipped; delete its workdir to rerun it. Each
# workdir gets command.txt (the exact command), train.log and process_wall_s.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-workdirs/fmnist}
OUT=${OUT:-results/fashion_mnist}
PY=${PY:-.venv/bin/python}
CONFIG=configs/fashion_mnist_history.py
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} TF_CPP_MIN_LOG_LEVEL=2

if [[ $# -gt 0 ]]; then
  FAMILIES=("$@")
else
  mapfile -t FAMILIES < <("$PY" -c "import runpy; print('\n'.join(runpy.run_path('$CONFIG')['FAMILIES']))")
fi

if [[ -z "${TABLE_ONLY:-}" ]]; then
  start=$(date +%s)
  for family in "${FAMILIES[@]}"; do
    workdir="$ROOT/$family"
    if [[ -f "$workdir/summary.json" ]]; then
      echo "== $family: done already ($workdir/summary.json)"
      continue
    fi
    arg="family=$family"
    [[ -n "${STEPS:-}" ]] && arg="$arg,steps=$STEPS"
    cmd="python -m cnn_history.main --config=$CONFIG:$arg --workdir=$workdir --config.progress_bar=False"
    mkdir -p "$workdir"
    echo "$cmd" > "$workdir/command.txt"
    echo "== $family: $cmd"
    t0=$(date +%s)
    # shellcheck disable=SC2086  # $cmd is one command line, split on purpose
    if ! "$PY" ${cmd#python } > "$workdir/train.log" 2>&1; then
      echo "!! $family failed; see $workdir/train.log" >&2
      tail -5 "$workdir/train.log" >&2
      continue
    fi
    echo $(( $(date +%s) - t0 )) > "$workdir/process_wall_s.txt"
    tail -1 "$workdir/train.log"
  done
  echo "== all families: $(( $(date +%s) - start )) s"
fi

# Other runs shown beside the shared budget: LeNet-5's 1998 recipe (results/lenet5), and the
# follow-up runs of workdirs/fmnist_extra/ (each with its command.txt) where they exist.
EXTRAS=("--extra=lenet5: 1998 paper recipe, 20 passes|results/lenet5/paper|python -m cnn_history.main --config=configs/lenet5.py --workdir=workdirs/lenet5_paper --config.progress_bar=False")
declare -A EXTRA_LABELS=(
  [vgg_bn]="vgg + BN (batch_norm=True)"
  [vgg_lr0.01]="vgg, base rate 0.01"
  [googlenet_lr0.01]="googlenet, base rate 0.01"
  [shufflenet_v1_lr0.01]="shufflenet_v1, base rate 0.01"
  [resnet20_paper_recipe]="resnet: its CIFAR paper recipe in 50 steps of 128"
)
for name in vgg_bn vgg_lr0.01 googlenet_lr0.01 shufflenet_v1_lr0.01 resnet20_paper_recipe; do
  dir="${EXTRA_ROOT:-workdirs/fmnist_extra}/$name"
  [[ -f "$dir/summary.json" ]] && EXTRAS+=("--extra=${EXTRA_LABELS[$name]}|$dir|")
done
"$PY" -m cnn_history.history_table --root="$ROOT" --out="$OUT" --config="$CONFIG" "${EXTRAS[@]}"
