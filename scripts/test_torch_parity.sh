#!/usr/bin/env bash
# Logit parity of the torchvision/timm converters (tests/test_convert_torch.py) against the torch
# networks themselves. The tests run in the project's .venv and call a Python with torch through
# CNN_HISTORY_TORCH_PYTHON; when that is unset, a venv at $CNN_HISTORY_TORCH_VENV (default
# ~/.cache/cnn_history/torch-venv, outside the repository) is created on first use.
# Extra arguments go to pytest, e.g. `scripts/test_torch_parity.sh -k resnet`.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${CNN_HISTORY_TORCH_PYTHON:-}" ]]; then
  venv="${CNN_HISTORY_TORCH_VENV:-$HOME/.cache/cnn_history/torch-venv}"
  if [[ ! -x "$venv/bin/python" ]]; then
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet torch==2.14.1 torchvision==0.29.1 timm safetensors numpy
  fi
  export CNN_HISTORY_TORCH_PYTHON="$venv/bin/python"
fi
.venv/bin/python -m pytest -q -s tests/test_convert_torch.py "$@"
