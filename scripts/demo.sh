#!/usr/bin/env bash
# The main job on the embedded default: a local Dask cluster on this machine (one worker per GPU,
# CPU workers where there is none) runs a query over parquet data it generates, then prints the
# result and where each worker ran. Extra arguments go to `python -m launcher.run`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup-env.sh
exec .venv/bin/python -m launcher.run "$@"
