#!/usr/bin/env bash
# The GPU check of results/benchmarks (run where a GPU is available; never part of the tests):
# ResNet-50 bfloat16 at batch 256 and ResNet-20 (CIFAR) float32 at batch 128, training and
# inference, synthetic device-resident batches. Prints the benchmark table (images/s, step time,
# GFLOP/s and its share of the measured bf16/f32 matmul peak = MFU) and writes JSON lines.
#
#   scripts/gpu_benchmark.sh [OUT_DIR]        # default results/benchmarks/gpu
#
# Needs a JAX with CUDA (pip install -U "jax[cuda12]") in the environment that runs it; about
# 3-4 minutes on one H100/H200-class GPU, most of it compilation.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/benchmarks/gpu}
PY=${PY:-python}
mkdir -p "$OUT"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} TF_CPP_MIN_LOG_LEVEL=2
"$PY" -c "import jax; d = jax.devices()[0]; print(d.platform, d.device_kind, jax.__version__)" \
  | tee "$OUT/device.txt"
for case in "resnet50 256 bfloat16 train" "resnet50 256 bfloat16 eval" \
            "resnet20 128 float32 train" "resnet20 128 float32 eval"; do
  read -r model batch dtype mode <<< "$case"
  "$PY" -m cnn_history.benchmark --model "$model" --batch "$batch" --dtype "$dtype" \
      --mode "$mode" --devices 1 --steps 20 --json "$OUT/gpu.jsonl" | tail -1
done
echo "JSON lines: $OUT/gpu.jsonl"
