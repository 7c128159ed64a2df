#!/usr/bin/env bash
# Sets up everything, idempotently: a virtualenv in .venv with the package and its test
# dependencies, the official Fashion-MNIST files from Debian (the offline dataset), and the
# oneDNN convolution custom call for CPU (g++ and libdnnl-dev from Debian; cnn_history/onednn.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
NEED=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || NEED+=(dataset-fashion-mnist)
[ -e /usr/include/oneapi/dnnl/dnnl.hpp ] || NEED+=(libdnnl-dev)
command -v g++ > /dev/null || NEED+=(g++)
if [ ${#NEED[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq "${NEED[@]}"
fi
.venv/bin/python -m cnn_history.onednn
