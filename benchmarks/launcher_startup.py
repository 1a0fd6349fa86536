"""Launcher start-up: seconds from ``srun -n 4`` to the first query result, ours vs dask-mpi.

Three commands run on the same Slurm, interleaved, ``--repeat`` times each (median reported):

- floor:    ``srun -n 4 python -c 'import distributed, polars'`` (any Python launcher pays this);
- dask-mpi: ``srun --mpi=pmi2 -n 4 python dask_mpi_job.py`` (rank 0 scheduler, rank 1 client,
  ranks 2-3 workers: dask-mpi's layout);
- ours:     ``srun -n 4 python -m launcher.run ours_job.py`` (4 workers, each in its rank's
  process; TLS on);
- ours, --nanny: the same with ``--nanny`` (each worker a process its rank's nanny spawns), a
  diagnostic row: what the second interpreter per rank costs.

Both job scripts run the same work: one small polars query per worker through ``client.map``,
timed until the client holds the first result. Usage (as root, Slurm installed)::

    python benchmarks/launcher_startup.py --repeat 5

Without ``SLURM_CONF`` set, the script starts a private Slurm with the test fixture's scripts
(``tests/launcher/slurm/start.sh``) and stops it at the end. ``--launcher mpirun`` (or
``mpiexec``) runs the same four rows under that MPI launcher instead, on a node without Slurm
(``srun -n 4`` becomes ``mpirun -n 4``; Open MPI needs ``OMPI_ALLOW_RUN_AS_ROOT=1`` and
``OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`` as root).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SLURM_SCRIPTS = REPO / "tests" / "launcher" / "slurm"

QUERY = """
import time

import polars as pl


def query(i):
    lf = pl.LazyFrame({"k": [j % 7 for j in range(10_000)], "v": list(range(10_000))})
    return lf.group_by("k").agg(pl.col("v").sum()).sort("k").collect()["v"].sum() + i


def first_result(client, n_workers):
    futures = client.map(query, range(n_workers), pure=False)
    for future in futures:
        future.result()
        print(f"FIRST_RESULT {time.time():.6f}", flush=True)
        break
    client.gather(futures)
"""

OURS_JOB = (
    QUERY
    + """
from distributed import Client

with Client() as client:
    first_result(client, len(client.scheduler_info()["workers"]))
"""
)

DASK_MPI_JOB = (
    """
from dask_mpi import initialize

initialize(nthreads=1, dashboard=False)
"""
    + QUERY
    + """
from distributed import Client

with Client() as client:
    client.wait_for_workers(2)
    first_result(client, len(client.scheduler_info()["workers"]))
"""
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def slurm_environment() -> Iterator[dict[str, str]]:
    """An environment with ``SLURM_CONF``: the caller's Slurm, else a private one."""
    if "SLURM_CONF" in os.environ:
        yield dict(os.environ)
        return
    with tempfile.TemporaryDirectory(prefix="bench-slurm-") as state:
        env = {
            **os.environ,
            "SLURM_TEST_STATE": state,
            "SLURM_TEST_CTLD_PORT": str(_free_port()),
            "SLURM_TEST_SLURMD_PORT": str(_free_port()),
            "SLURM_TEST_CLUSTER": f"bench{os.getpid()}",
        }
        subprocess.run([str(SLURM_SCRIPTS / "start.sh")], env=env, check=True, timeout=90)
        try:
            yield {**os.environ, "SLURM_CONF": f"{state}/slurm.conf"}
        finally:
            subprocess.run([str(SLURM_SCRIPTS / "stop.sh")], env=env, timeout=90, check=False)


def time_command(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Seconds to the first result (or to exit, when the command prints none) and to exit."""
    start = time.time()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    end = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{command} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    marks = [float(line.split()[1]) for line in done.stdout.splitlines() if "FIRST_RESULT" in line]
    return (marks[0] - start if marks else end - start), end - start


def launch(launcher: str, ntasks: int, *, mpi: bool = False) -> list[str]:
    """The command prefix that starts ``ntasks`` ranks (``mpi``: dask-mpi needs PMI under srun).

    >>> launch("srun", 4, mpi=True)
    ['srun', '--mpi=pmi2', '-n', '4']
    >>> launch("mpirun", 4, mpi=True)
    ['mpirun', '-n', '4']
    """
    pmi = ["--mpi=pmi2"] if mpi and launcher == "srun" else []
    return [launcher, *pmi, "-n", str(ntasks)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ntasks", type=int, default=4)
    parser.add_argument(
        "--launcher",
        choices=("srun", "mpirun", "mpiexec"),
        default="srun",
        help="what starts the ranks (default srun, on a private Slurm unless SLURM_CONF is set)",
    )
    args = parser.parse_args()
    python = sys.executable
    n = str(args.ntasks)
    print(f"load average before the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    environment = (
        slurm_environment() if args.launcher == "srun" else contextlib.nullcontext(dict(os.environ))
    )
    with (
        tempfile.TemporaryDirectory(prefix="bench-launcher-") as scratch,
        environment as env,
    ):
        cwd = Path(scratch)
        (cwd / "ours_job.py").write_text(OURS_JOB)
        (cwd / "dask_mpi_job.py").write_text(DASK_MPI_JOB)
        env = {
            **env,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        }
        ranks = launch(args.launcher, args.ntasks)
        ours = [*ranks, python, "-m", "launcher.run", "--no-dashboard", "ours_job.py"]
        commands = {
            "floor": [*ranks, python, "-c", "import distributed, polars"],
            "dask-mpi": [*launch(args.launcher, args.ntasks, mpi=True), python, "dask_mpi_job.py"],
            "ours": ours,
            "ours, --nanny": [*ours[:-1], "--nanny", ours[-1]],
        }
        first: dict[str, list[float]] = {name: [] for name in commands}
        total: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, command in commands.items():
                to_first, to_exit = time_command(command, env, cwd)
                first[name].append(to_first)
                total[name].append(to_exit)
    floor = statistics.median(first["floor"])
    print(f"{args.launcher} -n {n}, median of {args.repeat} (interleaved), seconds")
    print("| command | to first result | to exit | first result / floor |")
    print("|---|---|---|---|")
    for name in commands:
        to_first, to_exit = statistics.median(first[name]), statistics.median(total[name])
        print(f"| {name} | {to_first:.2f} | {to_exit:.2f} | {to_first / floor:.2f}x |")
    ours, dask_mpi = statistics.median(first["ours"]), statistics.median(first["dask-mpi"])
    print(f"ours / dask-mpi (to first result): {ours / dask_mpi:.2f}")
    print(f"load average after the runs: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
