#!/usr/bin/env bash
# Verify polars-hpc on a real GPU machine (issues 6 and 10), from the repository root, with the
# packages installed under /tmp/site (see benchmarks/README.md "GPU machine"). Every step logs to
# $OUT/<step>.log and goes on when one fails, so one run shows everything.
#   STEPS="checks comm tpch" benchmarks/device/verify_gpus.sh
set -uo pipefail
source "$(dirname "$0")/steps.sh"
steps="${STEPS:-checks comm tpch}"

engine_on_all_gpus() {
  # A file, not stdin: worker processes are spawned and re-import the parent's __main__.
  cat > "$out/engine_on_all_gpus.py" <<'PY'
import polars as pl
from engine.dask import DaskEngine


def main() -> None:
    with DaskEngine() as engine:
        print(f"cluster has {engine.nranks} workers")
        for info in engine.gather_cluster_info():
            b = info.binding
            print(
                f"rank={info.rank} pid={info.pid} CUDA_VISIBLE_DEVICES={info.cuda_visible_devices} "
                f"uuid={info.gpu_uuid} numa={info.numa_node} cpus={len(info.cpu_affinity)} "
                f"applied={b.get('applied')} polars_threads={b.get('polars_threads')} "
                f"reason={b.get('reason')}"
            )
        uuids = [info.gpu_uuid for info in engine.gather_cluster_info()]
        assert len(set(uuids)) == len(uuids) == engine.nranks, uuids
        lf = pl.LazyFrame({"a": list(range(1000))}).select(pl.sum("a"))
        assert lf.collect(engine=engine).item() == 499500
    print("distinct GPU per worker: OK")


if __name__ == "__main__":  # workers are spawned: they re-import this file
    main()
PY
  python3 "$out/engine_on_all_gpus.py"
}

two_dask_worker_processes() {
  local half=$((gpus / 2)) port=8799
  python3 -m distributed.cli.dask_scheduler --host 127.0.0.1 --port $port --no-dashboard &
  local sched=$!
  for local_rank in 0 1; do
    MPI_LOCALRANKID=$local_rank PMI_RANK=$local_rank PMI_SIZE=2 \
      python3 -m distributed.cli.dask_worker 127.0.0.1:$port --nworkers "$half" --nthreads 1 \
      --preload-nanny preload --no-dashboard &
  done
  python3 - "$port" "$gpus" <<'PY'
import os, sys
from distributed import Client

port, gpus = sys.argv[1], int(sys.argv[2])
with Client(f"127.0.0.1:{port}", timeout=60) as client:
    client.wait_for_workers(gpus, timeout=120)
    seen = client.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES"))
    for address, device in sorted(seen.items()):
        print(address, "CUDA_VISIBLE_DEVICES =", device)
    assert len(set(seen.values())) == gpus, seen
print("two dask worker processes, disjoint GPUs: OK")
PY
  local status=$?
  kill %2 %3 2>/dev/null; kill $sched 2>/dev/null; wait 2>/dev/null
  return $status
}

for s in $steps; do
  case $s in
    checks)
      step nvidia nvidia-smi topo -m
      step topology python3 -m preload.topology
      python3 -m preload.topology --record-sysfs "$out/node.tree" --record-nvml "$out/node-nvml.json"
      step gpu-tests python3 -m pytest -q -p no:cacheprovider -m gpu tests/preload/test_real_gpus.py
      step engine engine_on_all_gpus
      step two-workers two_dask_worker_processes
      ;;
    comm)
      step comm python3 benchmarks/comm_alltoall.py --ranks 2 "$gpus" --sizes-mib 1 16 64 256 \
        --transports ucxx ucxx-fast-same-host tcp
      ;;
    tpch)
      step "tpch-$gpus" python3 -m benchmarks.tpch.run --scale-factor 1 --workers "$gpus" \
        --repeat 2 --no-dask-dataframe
      step tpch-2 python3 -m benchmarks.tpch.run --scale-factor 1 --workers 2 --repeat 2 \
        --no-dask-dataframe
      ;;
  esac
done
