#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install polars-hpc into it.
# Usage: scripts/setup-env.sh [EXTRAS]   e.g. scripts/setup-env.sh test,dev
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
"$python" -c 'import sys; assert sys.version_info >= (3, 11), "polars-hpc needs Python >= 3.11"'
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
spec="."
[ -n "$extras" ] && spec=".[$extras]"
.venv/bin/python -m pip install -q -e "$spec" 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import engine.dask, launcher, preload' # the install must have worked
