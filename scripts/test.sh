#!/usr/bin/env bash
# The whole test suite, from a fresh machine: system packages (Slurm, munge; as root), the
# virtual environment with the test extras, ruff, then pytest. Slurm daemons are started and
# stopped by the test fixtures themselves. Extra arguments go to pytest.
# With CI=true (CI services set it) a test that skips for anything but missing hardware (no GPU,
# too few GPUs, one host) fails the run: see pytest_sessionfinish in tests/conftest.py.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install-system-packages.sh
scripts/setup-env.sh test,dev,bench,conformance
.venv/bin/ruff format --check .
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
