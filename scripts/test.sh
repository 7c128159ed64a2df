#!/usr/bin/env bash
# Sets everything up, then runs the whole test suite offline, two pytest workers (one per core).
# Extra arguments go to pytest, e.g. `scripts/test.sh -k lenet` or `scripts/test.sh -n 0`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
.venv/bin/python -m pytest -q -n 2 --dist worksteal --durations=40 tests "$@"
