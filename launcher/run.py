"""``python -m launcher.run [options] [script.py [args...]]``: run a script on the job's cluster.

Under ``srun`` or ``mpiexec`` every rank runs one single-threaded Dask worker in its own process
(with ``--nanny``: in a process its nanny spawns, with the ``preload`` module); rank 0 also runs
the scheduler and, once all workers joined, the script,
with ``DaskEngine()`` and a plain ``distributed.Client()`` attached to that cluster. Outside a
launcher a local cluster plays the same part. The script's exit status becomes every rank's.
"""

from __future__ import annotations

import atexit
import os
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from launcher.logs import configure_logging
from launcher.mpi import abort_world, join_world, leave_world
from launcher.options import parse_options
from launcher.spec import HostFacts, describe_plan, plan_job
from preload.ranks import detect_rank_info, refuse_inside_rrun

__all__ = ["console_main", "main"]


def _process_start_s() -> float:
    """When this process started (the kernel's record), in seconds since the epoch."""
    import psutil

    return psutil.Process().create_time()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the script on this rank's part of the job; return the script's exit status."""
    started_s = _process_start_s()
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
    comm = (
        join_world(
            info.size, os.environ, in_process_worker=not plan.worker.nanny, started_s=started_s
        )
        if plan.exchange == "mpi"
        else None
    )
    if options.log_level is not None:  # the script's DaskEngine and the workers read it too
        os.environ["POLARS_HPC_LOG_LEVEL"] = options.log_level
    logger = configure_logging(info.rank, level=options.log_level)
    if plan.exchange == "local":
        from launcher.local import run_local

        return run_local(plan, options, logger)
    from launcher.rank import RankRun

    return RankRun(plan, options, os.environ, logger, comm).run()


def console_main() -> NoReturn:
    """``python -m launcher.run`` / ``polars-hpc-run``: :func:`main`, then a prompt exit.

    The job is over when :func:`main` returns; interpreter finalisation (joining distributed's
    threads, tearing down polars and distributed) would cost every rank another second. The
    script's ``atexit`` handlers still run; then the process ends with the script's status.
    """
    try:
        status = main()
    except Exception:
        # The launcher's own bug or a broken install, not the script's. One write, not
        # print_exc's line by line: mpiexec stopped forwarding a crashed rank's stderr after the
        # first line once MPI_Abort ended the job (CI: only "Traceback (most recent call last):").
        sys.stderr.write(traceback.format_exc())
        sys.stderr.flush()
        abort_world(1)
        status = 1
    atexit._run_exitfuncs()  # the handlers Python would run at exit, the script's included
    sys.stdout.flush()
    sys.stderr.flush()
    leave_world(status)
    os._exit(status)


if __name__ == "__main__":
    console_main()
