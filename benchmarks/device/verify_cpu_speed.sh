#!/usr/bin/env bash
# Issue 15 on the lent machine's 16 clean cores, the GPU hidden (CUDA_VISIBLE_DEVICES=). Steps
# run in the order named, each under its own timeout, so one call of at most 10 minutes can hold
# several:
#   SF=10 benchmarks/device/verify_cpu_speed.sh data one   # SF10 data, 1 rank vs polars, all 22
#   SF=10 benchmarks/device/verify_cpu_speed.sh two        # 2 ranks vs polars
#   SF=10 benchmarks/device/verify_cpu_speed.sh four half  # 4 ranks with dask.dataframe; half memory
# REPEAT (default 2) sets the runs per query of one, two and four (best kept, after a warm-up).
# Packages: /tmp/site as an earlier call left it, else the CPU wheels carried in .whl-cpu
# (56 MiB, one call): polars polars-runtime-32 dask distributed tblib zict locket partd tornado
# importlib_metadata tpchgen-cli pytest-timeout (the machine has the rest). Data is generated once per machine.
# `half` repeats, on 1 rank, the query whose rank peak was largest in the 1-rank run, with the
# worker's memory limit set to half that peak (or HALF_QUERY at HALF_LIMIT bytes, from an
# earlier machine's run).
set -uo pipefail
[ $# -gt 0 ] || { echo "usage: verify_cpu_speed.sh data|one|two|four|half..." >&2; exit 2; }
if [ ! -d /tmp/site/polars ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl-cpu/*.whl || exit 1
fi
source "$(dirname "$0")/steps.sh"
export POLARS_HPC_TPCH_CACHE=/tmp/tpch CUDA_VISIBLE_DEVICES=
sf="${SF:-10}"
repeat="${REPEAT:-2}"
run=(python3 -m benchmarks.tpch.run --scale-factor "$sf")

for phase in "$@"; do
  case "$phase" in
  data)
    step "data-sf$sf" timeout 150 python3 -c \
      "from benchmarks.tpch.data import ensure_tpch_data as e; print(e($sf)); print(e(1))"
    ;;
  one) step cpu-1 timeout 240 "${run[@]}" --workers 1 --repeat "$repeat" --no-dask-dataframe --json /tmp/cpu-1.json ;;
  two) step cpu-2 timeout 240 "${run[@]}" --workers 2 --repeat "$repeat" --no-dask-dataframe --json /tmp/cpu-2.json ;;
  four) step cpu-4 timeout 400 "${run[@]}" --workers 4 --repeat "$repeat" --json /tmp/cpu-4.json ;;
  half)
    if [ -n "${HALF_QUERY:-}" ]; then
      query=$HALF_QUERY limit=$HALF_LIMIT
    else
      half=$(python3 -c "
import json
rows = json.load(open('/tmp/cpu-1.json'))
top = max(rows, key=lambda r: max(r['rank_peak_bytes']))
print(top['number'], max(top['rank_peak_bytes']) // 2)")
      read -r query limit <<<"$half"
    fi
    step cpu-half timeout 150 "${run[@]}" --workers 1 --repeat 1 --no-dask-dataframe \
      --queries "$query" --memory-limit "$limit"
    ;;
  *) echo "unknown step $phase: data, one, two, four or half" >&2; exit 2 ;;
  esac
done
cp /tmp/cpu-*.json "$out/" 2>/dev/null || true
