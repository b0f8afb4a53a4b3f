#!/usr/bin/env bash
# The test command of the README (and CI): quick tests plus the slow end-to-end ones, without the `extended` ones.
# Pass pytest arguments to narrow it, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EAPO_VENV:-$HOME/.venvs/eapo}"
export EAPO_DATA_DIR="${EAPO_DATA_DIR:-$(cd .. && pwd)/shared/data}"
# -m "not extended": the tests beyond CI's time budget are left out; a -m given here replaces it (`-m extended`).
exec "$VENV/bin/python" -m pytest -q --durations=40 -m "not extended" "$@"
