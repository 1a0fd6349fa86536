"""``python -m launcher.run [options] [script.py [args...]]``: run a script on the job's cluster.

Under ``srun`` or ``mpiexec`` every rank runs one single-threaded Dask worker (a nanny with the
``preload`` module); rank 0 also runs the scheduler and, once all workers joined, the script,
with ``DaskEngine()`` and a plain ``distributed.Client()`` attached to that cluster. Outside a
launcher a local cluster plays the same part. The script's exit status becomes every rank's.
"""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from launcher.logs import configure_logging
from launcher.options import parse_options
from launcher.spec import HostFacts, describe_plan, plan_job
from preload.ranks import detect_rank_info, refuse_inside_rrun

__all__ = ["console_main", "main"]


def _mpi_world(size: int) -> object:
    """``MPI.COMM_WORLD``, imported before ``distributed`` (whose threads stall MPI otherwise)."""
    from mpi4py import MPI

    world = MPI.COMM_WORLD
    if world.Get_size() != size:
        raise RuntimeError(
            f"the launcher reports {size} ranks but the MPI world has {world.Get_size()}: "
            "is mpi4py built against the MPI that started this job? Pass --scheduler-file PATH "
            "to skip MPI"
        )
    return world


def main(argv: Sequence[str] | None = None) -> int:
    """Run the script on this rank's part of the job; return the script's exit status."""
    options = parse_options(argv)
    try:
        refuse_inside_rrun(os.environ, "python -m launcher.run")
        info = detect_rank_info(os.environ)
        plans = plan_job(info, options, HostFacts.of_this_host(os.environ))
    except (RuntimeError, ValueError) as error:
        print(f"python -m launcher.run: error: {error}", file=sys.stderr)
        return 2
    if options.dry_run:
        print(describe_plan(plans))
        return 0
    plan = plans[info.rank]
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    comm = _mpi_world(info.size) if plan.exchange == "mpi" else None
    logger = configure_logging(info.rank)
    if plan.exchange == "local":
        from launcher.local import run_local

        return run_local(plan, options, logger)
    from launcher.rank import RankRun

    return RankRun(plan, options, os.environ, logger, comm).run()


def _finalize_mpi(status: int) -> None:
    """Leave MPI so that the launcher reports ``status``, not a signal, for the job.

    Measured with the mpich wheel's Hydra (``mpiexec``): once one rank exits non-zero, Hydra
    kills the others, and a killed rank's signal (9) often becomes ``mpiexec``'s status, with
    or without ``MPI_Finalize``. ``MPI_Abort(status)`` from rank 0 after a barrier is reported
    as ``status`` every time. Under Slurm (``srun --mpi=pmi2``) each task's own status counts,
    so there a rank just leaves after the barrier.
    """
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return
    world = mpi.COMM_WORLD
    world.Barrier()
    if status == 0:
        mpi.Finalize()
    elif "HYDI_CONTROL_FD" in os.environ:
        if world.Get_rank() == 0:
            world.Abort(status)
        world.Barrier()  # Hydra ends this rank once rank 0 aborted


def console_main() -> NoReturn:
    """``python -m launcher.run`` / ``polars-hpc-run``: :func:`main`, then a prompt exit.

    The job is over when :func:`main` returns; interpreter finalisation (joining distributed's
    threads, tearing down polars and distributed) would cost every rank another second. The
    script's ``atexit`` handlers still run; then the process ends with the script's status.
    """
    status = main()
    atexit._run_exitfuncs()  # the handlers Python would run at exit, the script's included
    sys.stdout.flush()
    sys.stderr.flush()
    _finalize_mpi(status)
    os._exit(status)


if __name__ == "__main__":
    console_main()
