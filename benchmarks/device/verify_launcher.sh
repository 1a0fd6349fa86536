#!/usr/bin/env bash
# Verify `python -m launcher.run` on a real GPU machine under Open MPI's mpirun (no Slurm there),
# from the repository root, with the packages installed under /tmp/site (benchmarks/README.md,
# "Launcher on the GPU machine"): one rank per GPU, each rank's worker on a GPU of its own, both
# in the rank's process (the default) and in a nanny's process (--nanny); `launcher.info`'s
# table; then the start-up benchmark on that quiet many-core node (CPU workers, as on the dev
# VM). Every step logs to $OUT/<step>.log and the script goes on when one fails.
set -uo pipefail
source "$(dirname "$0")/steps.sh"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

cat > "$out/ranks_on_gpus.py" <<'PY'
import polars as pl

from engine.dask import DaskEngine

with DaskEngine() as engine:
    infos = engine.gather_cluster_info()
    for info in infos:
        print(
            f"rank={info.rank} pid={info.pid} CUDA_VISIBLE_DEVICES={info.cuda_visible_devices} "
            f"uuid={info.gpu_uuid} cpus={len(info.cpu_affinity)} "
            f"applied={info.binding.get('applied')} reason={info.binding.get('reason')}"
        )
    uuids = [info.gpu_uuid for info in infos]
    assert None not in uuids and len(set(uuids)) == len(uuids) == engine.nranks, uuids
    total = pl.LazyFrame({"a": list(range(1000))}).select(pl.sum("a")).collect(engine=engine)
    assert total.item() == 499500
print("one GPU per rank: OK")
PY

step info mpirun -n "$gpus" python3 -m launcher.run --no-dashboard -m launcher.info
step ranks mpirun -n "$gpus" python3 -m launcher.run --no-dashboard "$out/ranks_on_gpus.py"
step ranks-nanny mpirun -n "$gpus" python3 -m launcher.run --no-dashboard --nanny \
  "$out/ranks_on_gpus.py"
step startup env CUDA_VISIBLE_DEVICES= python3 benchmarks/launcher_startup.py --launcher mpirun \
  --repeat "${REPEAT:-5}"
# The same with Open MPI's default one-core-per-rank binding off, for every row alike.
step startup-unbound env CUDA_VISIBLE_DEVICES= OMPI_MCA_hwloc_base_binding_policy=none \
  python3 benchmarks/launcher_startup.py --launcher mpirun --repeat "${REPEAT:-5}"
