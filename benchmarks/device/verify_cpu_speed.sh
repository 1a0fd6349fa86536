#!/usr/bin/env bash
# Issue 15 on the lent machine's 16 clean cores, the GPU hidden (CUDA_VISIBLE_DEVICES=):
#   benchmarks/device/verify_cpu_speed.sh ranks      # 1 and 2 ranks vs polars, all 22
#   benchmarks/device/verify_cpu_speed.sh wide       # 4 ranks with dask.dataframe; half memory
# Packages: /tmp/site as verify_device_backend.sh left it, else the CPU wheels carried in
# .whl-cpu (58 MB, one call): polars polars-runtime-32 dask distributed tblib zict locket partd
# tornado importlib_metadata tpchgen-cli (the machine has the rest). SF10 is generated once.
# The half-memory run repeats, on 1 rank, the query whose rank peak was largest in the 1-rank
# run, with the worker's memory limit set to half that peak.
set -uo pipefail
phase="${1:?usage: verify_cpu_speed.sh ranks|wide}"
[[ $phase == ranks || $phase == wide ]] || { echo "unknown phase $phase: ranks or wide" >&2; exit 2; }
if [ ! -d /tmp/site/polars ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl-cpu/*.whl || exit 1
fi
source "$(dirname "$0")/steps.sh"
export POLARS_HPC_TPCH_CACHE=/tmp/tpch CUDA_VISIBLE_DEVICES=
sf="${SF:-10}"
run=(python3 -m benchmarks.tpch.run --scale-factor "$sf")

case "$phase" in
ranks)
  step "data-sf$sf" timeout 200 python3 -c "from benchmarks.tpch.data import ensure_tpch_data as e; print(e($sf))"
  step cpu-1 timeout 280 "${run[@]}" --workers 1 --repeat 2 --no-dask-dataframe --json /tmp/cpu-1.json
  step cpu-2 timeout 280 "${run[@]}" --workers 2 --repeat 2 --no-dask-dataframe --json /tmp/cpu-2.json
  ;;
wide)
  step cpu-4 timeout 400 "${run[@]}" --workers 4 --repeat 2 --json /tmp/cpu-4.json
  half=$(python3 -c "
import json
rows = json.load(open('/tmp/cpu-1.json'))
top = max(rows, key=lambda r: max(r['rank_peak_bytes']))
print(top['number'], max(top['rank_peak_bytes']) // 2)")
  read -r query limit <<<"$half"
  step cpu-half timeout 150 "${run[@]}" --workers 1 --repeat 1 --no-dask-dataframe --queries "$query" \
    --memory-limit "$limit"
  ;;
esac
cp /tmp/cpu-*.json "$out/"
