"""The launcher under ``mpiexec`` (the mpich wheel): the address travels by MPI broadcast."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

MPIEXEC = Path(sys.executable).parent / "mpiexec"

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        not MPIEXEC.exists() and shutil.which("mpiexec") is None,
        reason="no mpiexec: pip install mpich mpi4py",
    ),
]


def run_mpiexec(
    ranks: int,
    command: list[str],
    cwd: Path,
    *,
    prefix: tuple[str, ...] = (),
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """``mpiexec -n ranks command`` outside any Slurm step (no inherited SLURM_/PMI_ variables)."""
    mpiexec = str(MPIEXEC) if MPIEXEC.exists() else "mpiexec"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_"))}
    env.update(extra_env or {})
    return subprocess.run(
        [*prefix, mpiexec, "-n", str(ranks), *command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )


def test_mpiexec_runs_the_query_on_four_ranks(job_dir, tools):
    done = run_mpiexec(4, tools.launcher_command("q.py", "2"), job_dir)
    assert "nranks=4 total=499500" in done.stdout, done.stderr
    assert done.returncode == 2, done.stderr
    assert "(mpi)" in done.stderr


def test_mpiexec_runs_a_module_with_its_own_arguments(job_dir, tools):
    """``-m launcher.info --json``: ``--json`` goes to the module, as with ``python -m``."""
    done = run_mpiexec(2, tools.launcher_command("-m", "launcher.info", "--json"), job_dir)
    assert done.returncode == 0, done.stderr
    workers = json.loads(done.stdout)
    assert sorted(worker["rank"] for worker in workers) == [0, 1]


def test_a_rank_that_crashes_ends_the_job_at_once(job_dir, tools, tmp_path):
    """Rank 0 dies before sharing the address: no rank may wait out --worker-timeout.

    Hydra kills the other ranks once one exits non-zero; Open MPI's ``mpirun`` (not installed
    here) waited out the timeout until ``launcher.mpi.abort_world`` (seen on the GPU machine).
    """
    broken = tmp_path / "broken-site" / "cryptography"
    broken.mkdir(parents=True)
    (broken / "__init__.py").write_text("raise ImportError('cryptography is broken here')\n")
    path = os.pathsep.join(filter(None, [str(broken.parent), os.environ.get("PYTHONPATH")]))
    start = time.monotonic()
    command = tools.launcher_command("--worker-timeout", "100", "q.py")
    done = run_mpiexec(2, command, job_dir, extra_env={"PYTHONPATH": path})
    assert time.monotonic() - start < 60, done.stderr
    assert done.returncode != 0
    assert "cryptography is broken here" in done.stderr


@pytest.mark.skipif(shutil.which("taskset") is None, reason="no taskset (util-linux)")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs a node with 2 or more CPUs")
def test_a_rank_bound_to_one_cpu_of_a_bigger_node_is_warned(job_dir, tools):
    """Open MPI's mpirun binds each rank to one core by default: the launcher says so."""
    command = tools.launcher_command("q.py", "0")
    done = run_mpiexec(1, command, job_dir, prefix=("taskset", "-c", "0"))
    assert done.returncode == 0, done.stderr
    assert "rank 0 may run on 1 of this node's" in done.stderr
    assert "--bind-to none" in done.stderr


DEVICE_SCRIPT = """\
import polars as pl
from engine.dask import DaskEngine

with DaskEngine() as engine:
    lf = pl.LazyFrame({"k": [1, 2, 1], "v": [1, 2, 3]}).group_by("k").agg(pl.sum("v")).sort("k")
    got = lf.collect(engine=engine)
    backend = "device" if engine._device is not None else "cpu"
    print(f"backend={backend} ranks={engine.nranks} v={got['v'].to_list()}")
"""


@pytest.mark.parametrize("layout", [(), ("--nanny",)], ids=["in-process", "nanny"])
def test_launcher_workers_run_the_device_backend(job_dir, tools, layout):
    """The device backend on the launcher's workers: in the rank processes, or under nannies.

    The ranks look like GPU workers (one GPU, shared) and import the CPU stand-in of
    cudf-polars, as ``tests/engine/test_device_backend.py`` does; the real one is run by
    ``pytest -m gpu`` on the lent machine.
    """
    (job_dir / "device.py").write_text(DEVICE_SCRIPT)
    standin = Path(__file__).resolve().parents[1] / "engine" / "gpu_standin"
    path = os.pathsep.join(filter(None, [str(standin), os.environ.get("PYTHONPATH")]))
    env = {
        "PYTHONPATH": path,
        "CUDA_VISIBLE_DEVICES": "0",
        "POLARS_HPC_ALLOW_GPU_SHARING": "1",
        "POLARS_HPC_CLIENT_FAST_PATH_BYTES": "0",
    }
    done = run_mpiexec(2, tools.launcher_command(*layout, "device.py"), job_dir, extra_env=env)
    assert done.returncode == 0, done.stderr
    assert "backend=device ranks=2 v=[4, 2]" in done.stdout, done.stderr
