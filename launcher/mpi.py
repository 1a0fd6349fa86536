"""The MPI side of a launched job: joining the world safely, waiting politely, leaving cleanly.

MPI only carries the scheduler's contact (:func:`launcher.exchange.mpi_share_contact`) and the
exit; everything else goes over Dask. Three traps are handled here:

- a stale MPICH shared-memory segment from an earlier, killed job with the same Slurm job and
  step id makes ``MPI_Init`` under ``srun --mpi=pmi2`` wait forever (:func:`join_world`);
- MPI's blocking collectives spin a core per waiting rank (:func:`wait_for_all`);
- Hydra reports a killed rank's signal instead of the script's status (:func:`leave_world`);
- a rank that crashes leaves the others waiting in a collective it will never join, and its
  own ``MPI_Finalize`` at interpreter exit waits for them in turn (:func:`abort_world`).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

__all__ = [
    "MPI_INIT_TIMEOUT_S",
    "abort_world",
    "join_world",
    "leave_world",
    "mpich_segment_path",
    "remove_stale_mpich_segment",
    "wait_for_all",
]

MPI_INIT_TIMEOUT_S: Final = 60.0
"""``MPI_Init`` takes well under a second; a rank still inside it after this is stuck."""
_POLL_S: Final = 0.005
_START_SKEW_S: Final = 2.0
"""A segment this much older than our own process cannot be our step's (all tasks of a step
start together, and the segment is made inside ``MPI_Init``)."""
_SHM_DIR: Final = Path("/dev/shm")


def _fnv1a_32(text: str) -> int:
    """32-bit FNV-1a, the hash MPICH names its node segment with.

    >>> f"{_fnv1a_32('35.0'):x}"
    '3e2f3843'
    """
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def mpich_segment_path(environ: Mapping[str, str]) -> Path | None:
    """The node segment MPICH will use in this Slurm step (``None`` outside ``srun``).

    Under Slurm's PMI2 the PMI key-value space is named ``<job>.<step>``, and MPICH (the
    ``mpich`` wheel, 4.x/5.x) names its segment ``/dev/shm/mpich_shm_<fnv1a(name)>_0``: the
    same name for every job with the same ids (test clusters restart job ids at 1).

    >>> mpich_segment_path({"SLURM_JOB_ID": "35", "SLURM_STEP_ID": "0"})
    PosixPath('/dev/shm/mpich_shm_3e2f3843_0')
    """
    job, step = environ.get("SLURM_JOB_ID"), environ.get("SLURM_STEP_ID")
    if not job or not step:
        return None
    return _SHM_DIR / f"mpich_shm_{_fnv1a_32(f'{job}.{step}'):x}_0"


def remove_stale_mpich_segment(environ: Mapping[str, str], started_s: float) -> Path | None:
    """Delete this step's MPICH segment if an earlier job left it; return the path removed.

    A job killed inside MPI (``scancel``, a timeout) leaves its segment behind; the next job
    with the same ids attaches to it, finds its barrier already used and waits forever. Only a
    segment older than this process (``started_s``, less the start skew of a step) is removed,
    and only by the node's first task, which creates the segment before the others attach.
    """
    if environ.get("SLURM_LOCALID", "0") != "0":
        return None
    path = mpich_segment_path(environ)
    if path is None:
        return None
    try:
        if path.stat().st_mtime >= started_s - _START_SKEW_S:
            return None
        path.unlink()
    except OSError:  # no segment (the usual case), or not ours to remove
        return None
    return path


def _load_ucx_before_mpi() -> None:
    """Load ucxx's own UCX libraries into this process before MPI loads another UCX.

    The mpich wheel (and many site MPIs) link a UCX of their own. Once ``libmpi`` put that
    ``libucs.so.0`` in the process, the UCX that ucxx ships can no longer load ("undefined
    symbol: ucs_ifname_to_ndev_index", seen with an in-process worker under ``mpiexec``), and
    the engine's ucxx transport is lost. Loaded first, ucxx's UCX (newer, backward compatible)
    serves both. The engine would load it at start anyway, so this costs no extra time.
    """
    import importlib.util

    if importlib.util.find_spec("libucx") is None:
        return
    import libucx

    libucx.load_library()


def _give_up_on_init(timeout_s: float, environ: Mapping[str, str]) -> None:
    segment = mpich_segment_path(environ)
    hint = (
        f" A segment left by an earlier job with the same job and step id ({segment}) makes "
        "MPICH wait forever: delete it, "
        if segment is not None
        else " "
    )
    print(
        f"python -m launcher.run: error: MPI_Init did not return within {timeout_s:.0f} s."
        f"{hint}or skip MPI: run under plain srun (the Slurm rendezvous) or pass "
        "--scheduler-file PATH",
        file=sys.stderr,
        flush=True,
    )
    os._exit(1)


def join_world(
    size: int,
    environ: Mapping[str, str],
    *,
    in_process_worker: bool,
    started_s: float,
    init_timeout_s: float = MPI_INIT_TIMEOUT_S,
) -> Any:
    """``MPI.COMM_WORLD``, initialised before ``distributed`` starts threads that stall MPI.

    A rank still inside ``MPI_Init`` after ``init_timeout_s`` prints why and exits 1 instead
    of hanging the job.
    """
    remove_stale_mpich_segment(environ, started_s)
    if in_process_worker:
        _load_ucx_before_mpi()
    watchdog = threading.Timer(init_timeout_s, _give_up_on_init, (init_timeout_s, environ))
    watchdog.daemon = True
    watchdog.start()
    try:
        from mpi4py import MPI
    finally:
        watchdog.cancel()
    world = MPI.COMM_WORLD
    if world.Get_size() != size:
        raise RuntimeError(
            f"the launcher reports {size} ranks but the MPI world has {world.Get_size()}: "
            "is mpi4py built against the MPI that started this job? Pass --scheduler-file PATH "
            "to skip MPI"
        )
    return world


def wait_for_all(comm: Any, timeout_s: float | None = None, poll_s: float = _POLL_S) -> None:
    """An MPI barrier that sleeps while it waits; ``TimeoutError`` after ``timeout_s``.

    MPI's blocking collectives spin: a rank waiting in ``bcast`` or ``Barrier`` keeps a core
    busy. While rank 0 starts its scheduler (or closes it), three waiting ranks of a 4-rank job
    on a 2-core node took the CPU it needed (``srun --mpi=pmi2`` starts took 30 s instead of
    8). ``Ibarrier`` polled with short sleeps costs the waiting ranks nothing.
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    request = comm.Ibarrier()
    while not request.Test():
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(
                f"not every MPI rank arrived within {timeout_s:.0f} s: a rank died or is stuck; "
                "see the other ranks' output"
            )
        time.sleep(poll_s)


def leave_world(status: int, timeout_s: float = 30.0) -> None:
    """Leave MPI so that the launcher reports ``status``, not a signal, for the job.

    Measured with the mpich wheel's Hydra (``mpiexec``): once one rank exits non-zero, Hydra
    kills the others, and a killed rank's signal (9) often becomes ``mpiexec``'s status, with
    or without ``MPI_Finalize``. ``MPI_Abort(status)`` from rank 0 after a barrier is reported
    as ``status`` every time. Under Slurm (``srun --mpi=pmi2``) each task's own status counts,
    so there a rank just leaves after the barrier. A rank that waited ``timeout_s`` for the
    others leaves without ``MPI_Finalize``.
    """
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return
    world = mpi.COMM_WORLD
    try:
        wait_for_all(world, timeout_s)
    except TimeoutError:
        return
    if status == 0:
        mpi.Finalize()
    elif "HYDI_CONTROL_FD" in os.environ:
        if world.Get_rank() == 0:
            world.Abort(status)
        wait_for_all(world)  # Hydra ends this rank once rank 0 aborted


def abort_world(status: int) -> None:
    """End every rank of the job now, after this rank crashed (returns only outside MPI).

    Seen under Open MPI's ``mpirun``: rank 0 died of an exception before it shared the
    scheduler's address; rank 1 sat in the exchange for the whole ``--worker-timeout`` while
    rank 0 sat in ``MPI_Finalize`` waiting for it. ``MPI_Abort`` is the one call every MPI
    launcher turns into "kill the job" at once.
    """
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is None or not mpi.Is_initialized() or mpi.Is_finalized():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    mpi.COMM_WORLD.Abort(status)
