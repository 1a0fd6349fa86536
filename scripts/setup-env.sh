#!/usr/bin/env bash
# Create (or update) the project's virtual environment in .venv and install polars-hpc into it.
# Usage: scripts/setup-env.sh [EXTRAS]   e.g. scripts/setup-env.sh test,dev
# Any failed install stops the script with pip's exit status: CI must not go on to run tests
# that would then skip for a missing package (mpich, duckdb, pandas, ...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
extras="${1:-}"
python="${PYTHON:-python3}"

# pip, its output without the "WARNING: Location" noise of a venv inside a venv; pip's own exit
# status (a filter in a pipeline would hide it), and an unknown extra (only a warning to pip)
# is an error here.
pip_install() {
  local log status=0
  log=$(.venv/bin/python -m pip install "$@" 2>&1) || status=$?
  grep -v '^WARNING: Location' <<<"$log" || true # grep finds nothing to print: not an error
  if [ "$status" -ne 0 ]; then
    echo "setup-env.sh: pip install $* failed with exit status $status" >&2
    return "$status"
  fi
  if grep -q 'does not provide the extra' <<<"$log"; then
    echo "setup-env.sh: pip install $*: an extra is not defined in pyproject.toml" >&2
    return 1
  fi
}

"$python" -c 'import sys; assert sys.version_info >= (3, 11), "polars-hpc needs Python >= 3.11"'
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip_install -q --upgrade pip
spec="."
[ -n "$extras" ] && spec=".[$extras]"
pip_install -q -e "$spec"
.venv/bin/python -m pip check # every installed package's requirements are met
.venv/bin/python -c 'import engine.dask, launcher, preload' # the install must have worked
