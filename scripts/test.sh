#!/usr/bin/env bash
# The test command of the README: the whole suite (quick tests plus the slow end-to-end ones).
# Pass pytest arguments to narrow it, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EAPO_VENV:-$HOME/.venvs/eapo}"
export EAPO_DATA_DIR="${EAPO_DATA_DIR:-$(cd .. && pwd)/shared/data}"
exec "$VENV/bin/python" -m pytest -q --durations=40 "$@"
