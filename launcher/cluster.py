"""The Dask side of a rank: scheduler, worker (in-process or nanny), the join wait and the exit.

Everything here runs on one event loop in a background thread (:class:`LoopThread`), so the
main thread stays free for the user's script and for signal handlers.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from distributed.diagnostics.plugin import SchedulerPlugin

from launcher.dashboard import dashboard_address

if TYPE_CHECKING:
    from distributed import Nanny, Scheduler, Worker
    from distributed.security import Security

    from launcher.spec import WorkerSpec
    from preload.assign import GpuAssignment

__all__ = [
    "EXIT_OP",
    "ExitBoard",
    "LoopThread",
    "WorkerLossWatch",
    "missing_ranks",
    "prepare_in_process_worker",
    "start_in_process_worker",
    "start_nanny",
    "start_scheduler",
    "wait_for_exit_status",
    "wait_for_workers",
    "wait_for_workers_to_leave",
]

T = TypeVar("T")

EXIT_OP = "polars_hpc_wait_exit"
"""Scheduler handler every rank calls at start and that answers with the script's exit status."""


class LoopThread:
    """An asyncio loop in a daemon thread; :meth:`run` waits for a coroutine from any thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="launcher-loop")
        self._thread.daemon = True
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
        """Run ``coroutine`` on the loop and return its result (``TimeoutError`` after timeout)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(timeout_s)
        except TimeoutError:
            if future.done():  # the coroutine's own TimeoutError, with its own message
                raise
            future.cancel()
            raise TimeoutError(f"launcher step did not finish within {timeout_s} s") from None

    def stop(self) -> None:
        """Stop the loop; the thread ends with it."""
        self.loop.call_soon_threadsafe(self.loop.stop)


async def start_scheduler(
    *, host: str, protocol: str, security: Security | None, dashboard_port: int | None
) -> Scheduler:
    """Start the scheduler on ``host`` (a port the kernel picks).

    Its HTTP server (always started) gets ``dashboard_port`` when that is free and the
    dashboard can run, else a free port: never distributed's default 8787, which a second job
    on the node would find taken (:mod:`launcher.dashboard`).
    """
    from distributed import Scheduler

    dashboard, http_address = dashboard_address(host, dashboard_port)
    scheduler = Scheduler(
        host=host,
        port=0,
        protocol=f"{protocol}://",
        security=security,
        dashboard=dashboard,
        dashboard_address=http_address,
    )
    return await scheduler


async def start_nanny(
    address: str,
    spec: WorkerSpec,
    *,
    host: str,
    protocol: str,
    security: Security | None,
    death_timeout_s: float,
) -> Nanny:
    """Start this rank's worker: a nanny that runs the ``preload`` module, then the worker."""
    from distributed import Nanny

    nanny = Nanny(
        address,
        nthreads=spec.nthreads,
        name=spec.name,
        memory_limit=spec.memory_limit_bytes,
        preload_nanny=list(spec.preload_nanny),
        host=host,
        protocol=f"{protocol}://",
        security=security,
        env=dict(spec.env),
        dashboard=False,
        death_timeout=death_timeout_s,
        silence_logs=False,
    )
    return await nanny


def prepare_in_process_worker(spec: WorkerSpec) -> GpuAssignment:
    """Give this rank's process its worker's environment: thread counts and its GPU.

    What the ``preload`` module does in a nanny for the process it spawns, done to the rank
    itself, with the same rule (:func:`preload.assign_for_rank`). It must run before the worker,
    polars' thread pool or a CUDA context start here: they read these variables once.
    Raises :class:`preload.assign.GpuAssignmentError` when the rank cannot get a GPU of its own.
    """
    from preload import assign_for_rank, log_assignment

    os.environ.update(spec.env)
    assignment = assign_for_rank(os.environ)
    os.environ.update(assignment.worker_env(os.environ))
    log_assignment(assignment)
    return assignment


async def start_in_process_worker(
    address: str,
    spec: WorkerSpec,
    *,
    host: str,
    protocol: str,
    security: Security | None,
    death_timeout_s: float,
) -> Worker:
    """Start this rank's worker inside the rank's process (no second interpreter to start).

    Call :func:`prepare_in_process_worker` first.
    """
    from distributed import Worker

    worker = Worker(
        address,
        nthreads=spec.nthreads,
        name=spec.name,
        memory_limit=spec.memory_limit_bytes,
        host=host,
        protocol=f"{protocol}://",
        security=security,
        dashboard=False,
        death_timeout=death_timeout_s,
    )
    return await worker


def missing_ranks(size: int, joined_names: set[str], hosts: Mapping[int, str]) -> str:
    """``rank 2 (host cn2), rank 3 (host unknown)``: the ranks whose worker never joined.

    >>> missing_ranks(4, {"0", "1"}, {2: "cn2"})
    'rank 2 (host cn2), rank 3 (host unknown)'
    """
    return ", ".join(
        f"rank {rank} (host {hosts.get(rank, 'unknown')})"
        for rank in range(size)
        if str(rank) not in joined_names
    )


def _joined_names(scheduler: Scheduler) -> set[str]:
    return {str(state.name) for state in scheduler.workers.values()}


async def wait_for_workers(
    scheduler: Scheduler, size: int, timeout_s: float, hosts: Callable[[], Mapping[int, str]]
) -> None:
    """Return once ``size`` workers joined; ``TimeoutError`` naming the missing ranks otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(_joined_names(scheduler)) < size:
        if loop.time() > deadline:
            raise TimeoutError(
                f"only {len(scheduler.workers)} of {size} workers joined within "
                f"{timeout_s:.0f} s; missing: "
                f"{missing_ranks(size, _joined_names(scheduler), hosts())}. "
                "Raise --worker-timeout, or check those ranks' output"
            )
        await asyncio.sleep(0.02)


class WorkerLossWatch(SchedulerPlugin):
    """Scheduler plugin: a worker that leaves before the end stops the whole job.

    A rank's worker is its share of every query; without it the job cannot finish correctly,
    so instead of hanging, rank 0 learns which rank left and ends the job with an error.
    """

    name = "polars-hpc-worker-loss"

    def __init__(self, on_loss: Callable[[str], None]) -> None:
        self.finishing = False
        self._on_loss = on_loss
        self._names: dict[str, str] = {}

    def add_worker(self, scheduler: Scheduler, worker: str) -> None:
        """Scheduler hook: remember the worker's rank (its name) for the loss message."""
        state = scheduler.workers.get(worker)
        self._names[worker] = str(state.name) if state is not None else "?"

    def remove_worker(self, scheduler: Scheduler, worker: str, **kwargs: Any) -> None:
        """Scheduler hook: report a worker that left while the job was still running."""
        if self.finishing:
            return
        name = self._names.pop(worker, "?")
        why = kwargs.get("stimulus_id") or "no reason given"
        self._on_loss(f"the worker of rank {name} ({worker}) left the cluster (scheduler: {why})")


class ExitBoard:
    """Rank 0's side of the exit: every other rank waits here for the script's exit status.

    Each rank opens one connection to the scheduler at start and calls :data:`EXIT_OP` on it;
    the call returns when rank 0 :meth:`publish` es the status. The same connection breaking
    tells a rank that rank 0 is gone, so one channel carries both news, and nothing new has to
    be connected at the end of the job (when a loaded node is slowest to accept connections).
    """

    def __init__(self) -> None:
        self._published = asyncio.Event()
        self.status = 0
        self.answered = 0

    def install(self, scheduler: Scheduler) -> None:
        """Register the handler on ``scheduler``."""
        scheduler.handlers[EXIT_OP] = self._wait_exit

    async def _wait_exit(self, comm: Any) -> int:
        await self._published.wait()
        self.answered += 1
        return self.status

    def publish(self, status: int) -> None:
        """Answer every waiting rank with ``status`` (call on the loop)."""
        self.status = status
        self._published.set()

    async def wait_answered(self, count: int, timeout_s: float) -> None:
        """Wait until ``count`` ranks have their answer (or ``timeout_s`` passed)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.answered < count and loop.time() < deadline:
            await asyncio.sleep(0.01)


async def wait_for_workers_to_leave(scheduler: Scheduler, remaining: int, timeout_s: float) -> None:
    """Wait until at most ``remaining`` workers are left, so none sees its scheduler vanish."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while len(scheduler.workers) > remaining and loop.time() < deadline:
        await asyncio.sleep(0.02)


async def wait_for_exit_status(
    address: str, security: Security | None, connect_timeout_s: float
) -> int | None:
    """Block on rank 0's :class:`ExitBoard`: the exit status, or ``None`` if rank 0 is gone.

    The connection is retried for ``connect_timeout_s`` (the launcher's worker timeout, not
    distributed's 30 s): on a loaded node a TLS handshake can take that long, and a rank that
    gave up here would take its worker out of a healthy job.
    """
    from distributed.comm import connect
    from distributed.comm.core import CommClosedError

    args = security.get_connection_args("client") if security is not None else {}
    comm = await connect(address, timeout=connect_timeout_s, **args)
    try:
        await comm.write({"op": EXIT_OP, "reply": True})
        status = await comm.read()
    except (CommClosedError, OSError):
        return None
    finally:
        comm.abort()
    return status if isinstance(status, int) else None
