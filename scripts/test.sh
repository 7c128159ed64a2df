#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite (offline; ~4 min on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/python -m pytest -q tests "$@"
