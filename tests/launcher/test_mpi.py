"""The launcher under ``mpiexec`` (the mpich wheel): the address travels by MPI broadcast."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(120)]

MPIEXEC = Path(sys.executable).parent / "mpiexec"


@pytest.mark.skipif(
    not MPIEXEC.exists() and shutil.which("mpiexec") is None,
    reason="no mpiexec: pip install mpich mpi4py",
)
def test_mpiexec_runs_the_query_on_four_ranks(job_dir, tools):
    mpiexec = str(MPIEXEC) if MPIEXEC.exists() else "mpiexec"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_"))}
    done = subprocess.run(
        [mpiexec, "-n", "4", *tools.launcher_command("q.py", "2")],
        cwd=job_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=110,
    )
    assert "nranks=4 total=499500" in done.stdout, done.stderr
    assert done.returncode == 2, done.stderr
    assert "(mpi)" in done.stderr
