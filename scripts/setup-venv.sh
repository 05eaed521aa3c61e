#!/usr/bin/env bash
# Create ./.venv (if missing) and install pet-ipi into it, with the CPU build of torch 2.13.0.
# Idempotent: a second call only re-installs the project itself (fast).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv ..."
    "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    echo "installing torch==2.13.0 (CPU) ..."
    .venv/bin/pip install --quiet "torch==2.13.0"
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e . 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import pet, grids, driver, ase, ipi, vesin" || {
    echo "setup failed: the project does not import" >&2; exit 1; }
