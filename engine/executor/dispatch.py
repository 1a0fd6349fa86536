"""SPMD dispatch on Dask: one task per rank, results fetched straight from the workers.

Client side: :func:`submit_ranks` sends each rank the plan (without the in-memory frames) and
its own row ranges of those frames, pinned to its worker. Worker side: :func:`run_rank` secedes
from the worker's thread pool (so a single-threaded worker can run ranks of several queries at
once), finds its communicator and runs :class:`engine.executor.rank.RankExecutor`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from engine.comm.base import CommunicatorError, PeerFailedError, QueryAbortedError
from engine.executor.counting import CountingCommunicator
from engine.executor.exchange import SpillPolicy
from engine.executor.frames import concat_frames
from engine.executor.polars_environ import PolarsEnviron, applied_polars_environ
from engine.executor.rank import PartitionLimits, RankExecutor
from engine.executor.reads import ReadObservingRunner
from engine.executor.results import HeadFrame, concat_result, rank_frames
from engine.executor.sinks import SinkRequest, write_part
from engine.logs import RANK_TASK_PREFIX
from engine.plan.nodes import DistributedPlan, Fallback
from engine.progress import current_observation, stage_event_sender
from engine.stats import StageRecorder

if TYPE_CHECKING:
    from distributed import Client, Future

    from engine.comm.base import Communicator

__all__ = [
    "DistributedQueryResult",
    "QueryCancelledError",
    "RankOutput",
    "RankSettings",
    "apply_fallback_mode",
    "cancel_query_on_worker",
    "gather_result",
    "new_query_id",
    "present_workers",
    "run_rank",
    "submit_ranks",
]

_LOG = logging.getLogger(__name__)

CommunicatorLookup = Callable[[str], "Communicator"]
"""``comm_id -> communicator`` of this worker (runs on the worker)."""

LOST_WORKER_POLL_S = 1.0
"""How often the client checks, while it waits, that every rank's worker is still there."""
ECHO_GRACE_S = 15.0
"""After a rank failed with a peer's echo, how long the client waits for the rank whose own
error caused it (the cause reaches the client after its echo on a loaded machine: at 2 s a
ShapeError once surfaced as the peer's QueryAbortedError). A rank whose worker died is
noticed by the worker check, and a peer's PeerFailedError is raised at once."""

_CANCELLED_QUERIES: dict[str, None] = {}
"""Query ids the client cancelled (Ctrl-C, a failed rank), per worker process, oldest first."""
_CANCELLED_KEPT = 4096
"""Cancelled ids remembered; a cancellation arriving after its ranks ended is never removed."""
_CANCELLED_LOCK = threading.Lock()


class QueryCancelledError(CommunicatorError):
    """The client cancelled the query (Ctrl-C in ``collect``, or another rank failed)."""


async def cancel_query_on_worker(query_id: str) -> None:
    """Mark ``query_id`` cancelled in this worker process (``client.run(..., wait=False)``).

    A coroutine because Dask runs only those without waiting for the answer; a Ctrl-C handler
    must not wait on the workers.

    Its ranks stop at their next exchange: raising there leaves the query scope with an error,
    which aborts the peers waiting in that exchange, so every rank stops within one fragment.
    """
    with _CANCELLED_LOCK:
        _CANCELLED_QUERIES[query_id] = None
        while len(_CANCELLED_QUERIES) > _CANCELLED_KEPT:
            del _CANCELLED_QUERIES[next(iter(_CANCELLED_QUERIES))]


def _tag_source(query_id: str) -> Callable[[], int]:
    """Tags for one rank's exchanges; drawing one first checks that the query still runs."""
    tags = itertools.count()

    def draw() -> int:
        with _CANCELLED_LOCK:
            cancelled = query_id in _CANCELLED_QUERIES
        if cancelled:
            raise QueryCancelledError(f"query {query_id} was cancelled by the client")
        return next(tags)

    return draw


@dataclass(frozen=True)
class RankOutput:
    """What one rank returns: its part of the result (kept on the worker until fetched)."""

    frame: pl.DataFrame | None
    bytes_sent: int
    files: tuple[str, ...] = ()
    stages: tuple[dict[str, Any], ...] = ()
    """This rank's record of each stage (:class:`engine.stats.StageRecorder`)."""


@dataclass(frozen=True)
class RankSettings:
    """Per-query settings every rank receives."""

    nranks: int
    comm_id: str | None
    query_id: str
    scope_id: int
    limits: PartitionLimits
    sink: SinkRequest | None = None
    spill_fraction: float = 0.25
    """Received shuffle data above this share of the worker's memory limit spills to disk."""
    progress_topic: str | None = None
    """Dask event topic each finished stage is reported on; ``None``: no live progress."""
    polars_environ: PolarsEnviron = ()
    """The client's ``POLARS_*`` variables, applied while the rank runs the query."""


def apply_fallback_mode(
    fallbacks: Sequence[Fallback], mode: Literal["warn", "raise", "silent"]
) -> None:
    """Warn (a ``UserWarning`` in the client), raise, or stay silent about fallbacks."""
    if not fallbacks or mode == "silent":
        return
    listed = "; ".join(f.describe() for f in fallbacks)
    if mode == "raise":
        raise NotImplementedError(
            f"DaskEngine cannot distribute this query: {listed}. Set "
            "StreamingOptions(fallback_mode='warn') or 'silent' to run it anyway"
        )
    warnings.warn(f"DaskEngine fallback: {listed}", UserWarning, stacklevel=4)


def submit_ranks(
    client: Client,
    workers: Sequence[str],
    plan: DistributedPlan,
    settings: RankSettings,
    lookup: CommunicatorLookup | None,
) -> list[Future]:
    """One pinned task per rank; their futures, by rank."""
    observation = current_observation()
    if observation is not None:
        settings = observation.on_submit(client, plan, settings)
    shipped = dataclasses.replace(plan, frames=())
    return [
        client.submit(
            run_rank,
            shipped,
            rank,
            _frames_on_worker(client, plan, rank, workers),
            settings,
            lookup,
            workers=[address],
            allow_other_workers=False,
            pure=False,
            key=f"{RANK_TASK_PREFIX}{settings.query_id}-rank-{rank}",
        )
        for rank, address in enumerate(workers)
    ]


_SCATTER_ABOVE_BYTES = 1 << 20
"""A rank's in-memory frames above this size go straight to its worker (``scatter``), not
inside the task through the scheduler (which warns "Sending large graph" past 10 MiB)."""


def _frames_on_worker(
    client: Client, plan: DistributedPlan, rank: int, workers: Sequence[str]
) -> list[pl.DataFrame] | Future:
    """Rank ``rank``'s row ranges of the plan's frames, or a future of them on its worker."""
    frames = rank_frames(plan, rank, len(workers))
    if sum(frame.estimated_size() for frame in frames) <= _SCATTER_ABOVE_BYTES:
        return frames
    return client.scatter(frames, workers=[workers[rank]], direct=True, hash=False)


def run_rank(
    plan: DistributedPlan,
    rank: int,
    frames: list[pl.DataFrame],
    settings: RankSettings,
    lookup: CommunicatorLookup | None,
) -> RankOutput:
    """Worker side: this rank's part of the result (or the part files it wrote)."""
    try:
        with applied_polars_environ(settings.polars_environ):
            return _run_rank(plan, rank, frames, settings, lookup)
    except BaseException as error:
        _log_rank_failure(rank, settings.query_id, error)
        raise


def _log_rank_failure(rank: int, query_id: str, error: BaseException) -> None:
    """One line per failed rank (INFO; a peer's echo at DEBUG), the traceback at DEBUG.

    distributed's own "Compute Failed" block for our tasks (30 lines per rank) is dropped by
    :func:`engine.logs.configure_worker_logging`; the client shows the error once.
    """
    echo = isinstance(error, CommunicatorError)
    first_line = (str(error).strip().splitlines() or [""])[0][:200]
    _LOG.log(
        logging.DEBUG if echo else logging.INFO,
        "query %s failed on rank %d: %s: %s",
        query_id,
        rank,
        type(error).__name__,
        first_line,
    )
    _LOG.debug("query %s on rank %d: traceback", query_id, rank, exc_info=error)


def _run_rank(
    plan: DistributedPlan,
    rank: int,
    frames: list[pl.DataFrame],
    settings: RankSettings,
    lookup: CommunicatorLookup | None,
) -> RankOutput:
    from distributed import get_worker, secede

    secede()
    worker = get_worker()
    limit = worker.memory_manager.memory_limit
    spill = SpillPolicy(
        os.path.join(worker.local_directory, "polars-hpc-spill"),
        int(limit * settings.spill_fraction) if limit else None,
    )
    tags = _tag_source(settings.query_id)
    assert plan.root is not None
    with _communicator(settings, rank, lookup).query_scope(settings.scope_id) as scoped:
        comm = CountingCommunicator(scoped)
        sender = stage_event_sender(worker, settings.progress_topic, settings.query_id)
        stages = StageRecorder(plan, comm, sender, spill)
        runner = ReadObservingRunner(stages)
        limits = settings.limits.for_worker(limit)
        executor = RankExecutor(plan, comm, frames, tags, limits, runner, spill, stages)
        if settings.sink is None:
            frame = concat_frames(executor.run(), plan.output_schema)
            return RankOutput(frame, comm.bytes_sent, stages=stages.records())
        written = []
        for index, part in enumerate(executor.stream(plan.root)):
            empty = isinstance(part, pl.DataFrame) and part.height == 0
            if empty and (rank != 0 or index > 0):
                continue
            written.append(write_part(settings.sink, executor.lazy(part), rank, index))
        return RankOutput(None, comm.bytes_sent, tuple(written), stages.records())


def _communicator(
    settings: RankSettings, rank: int, lookup: CommunicatorLookup | None
) -> Communicator:
    if settings.nranks == 1:
        from engine.executor.loopback import LoopbackCommunicator

        return LoopbackCommunicator()
    if lookup is None or settings.comm_id is None:
        raise RuntimeError(
            f"rank {rank} of {settings.nranks} has no communicator: the engine was started "
            "without one; multi-worker queries need DaskEngine's communicator"
        )
    comm = lookup(settings.comm_id)
    if comm.rank != rank or comm.nranks != settings.nranks:
        raise RuntimeError(
            f"worker for rank {rank}/{settings.nranks} holds communicator rank "
            f"{comm.rank}/{comm.nranks}; the engine's worker list and communicator disagree"
        )
    return comm


def gather_result(
    client: Client,
    plan: DistributedPlan,
    futures: list[Future],
    workers: Sequence[str] | None = None,
) -> tuple[pl.DataFrame, int]:
    """Every rank's part, fetched straight from its worker, in rank order; and bytes shuffled."""
    outputs = gather_outputs(client, futures, workers)
    frames = [out.frame for out in outputs if out.frame is not None]
    return concat_result(plan, frames), sum(out.bytes_sent for out in outputs)


def gather_outputs(
    client: Client, futures: list[Future], workers: Sequence[str] | None = None
) -> list[RankOutput]:
    """Every rank's output; if ranks failed, raise the root cause, not a peer's abort.

    When one rank fails, its peers leave their collectives with ``QueryAbortedError``; the
    error worth showing is the one that is not such an echo. The wait ends as soon as the query
    cannot succeed, not when every rank ended: the task of a rank whose worker died never ends
    (Dask keeps it waiting for a worker of that address), so ``workers`` (rank order) are
    checked while waiting and a missing one fails the query, naming its rank.
    """
    failure = _wait_for_ranks(client, futures, workers)
    if failure is not None:
        raise _as_shown_to_user(failure, futures, workers)
    outputs = client.gather(futures, direct=True)
    observation = current_observation()
    if observation is not None:
        observation.on_outputs(outputs)
    return outputs


def _wait_for_ranks(
    client: Client, futures: list[Future], workers: Sequence[str] | None
) -> BaseException | None:
    """Wait until every rank finished (``None``) or the query failed (the error to raise)."""
    from distributed import wait

    failed_at: float | None = None
    next_worker_check = time.monotonic() + LOST_WORKER_POLL_S
    while True:
        # Pending first: a rank that finishes between the two reads is then seen in the
        # failure too. The other order once returned a rank's echo (QueryAbortedError) as the
        # query's error while the rank with the cause (a ShapeError) had just finished.
        pending = [f for f in futures if f.status == "pending"]
        failure = _root_cause(futures)
        if not pending or (failure is not None and not isinstance(failure, QueryAbortedError)):
            return failure  # a rank's own error, or a dead or frozen peer: no echo to wait out
        now = time.monotonic()
        if failure is not None:
            failed_at = now if failed_at is None else failed_at
            if now - failed_at > ECHO_GRACE_S:
                return failure
        if workers is not None and now >= next_worker_check:
            next_worker_check = now + LOST_WORKER_POLL_S
            lost = _lost_rank(client, futures, workers)
            if lost is not None:
                return lost
        with contextlib.suppress(TimeoutError):
            wait(pending, timeout=LOST_WORKER_POLL_S, return_when="FIRST_COMPLETED")


def _as_shown_to_user(
    failure: BaseException, futures: list[Future], workers: Sequence[str] | None
) -> BaseException:
    """The error once, naming the rank that raised it; polars' errors without worker frames.

    A polars error (bad data, a failed cast) reads as polars' own error in the user's process:
    its message says what is wrong, and the ~20 frames of the rank executor above it say
    nothing to the user (the worker logs them at DEBUG: ``log_level="DEBUG"``). Any other
    error keeps its worker traceback: it points at a UDF or at us.
    """
    rank = next(
        (r for r, f in enumerate(futures) if f.status == "error" and f.exception() is failure),
        None,
    )
    if rank is None:  # raised here on the client (a lost worker): its message names the rank
        return failure
    where = f" (worker {workers[rank]})" if workers is not None else ""
    failure.add_note(
        f"DaskEngine: raised on rank {rank} of {len(futures)}{where}; its traceback is in that "
        "worker's log at DEBUG (StreamingOptions(log_level='DEBUG') or POLARS_HPC_LOG_LEVEL)"
    )
    if isinstance(failure, pl.exceptions.PolarsError):
        return failure.with_traceback(None)
    return failure


def _root_cause(futures: list[Future]) -> BaseException | None:
    """The most telling error among the ranks: their own, then a dead peer, then an echo."""
    errors: list[BaseException] = []
    for rank, future in enumerate(futures):
        if future.status == "error":
            errors.append(future.exception())
        elif future.status not in ("pending", "finished"):
            errors.append(QueryCancelledError(f"rank {rank}'s task is {future.status}"))
    own = [e for e in errors if not isinstance(e, CommunicatorError)]
    dead_peer = [e for e in errors if isinstance(e, PeerFailedError)]
    return next(iter(own or dead_peer or errors), None)


def _lost_rank(
    client: Client, futures: list[Future], workers: Sequence[str]
) -> PeerFailedError | None:
    """A ``PeerFailedError`` for the first pending rank whose worker left the cluster."""
    present = present_workers(client)
    for rank, (future, address) in enumerate(zip(futures, workers, strict=True)):
        if future.status == "pending" and address not in present:
            return PeerFailedError(
                f"rank {rank}'s worker {address} left the cluster during the query (its process "
                "died or was killed: see that worker's log); this DaskEngine cannot run queries "
                "any more, create a new DaskEngine"
            )
    return None


def present_workers(client: Client) -> set[str]:
    """Addresses of the workers in the cluster now, asked of the scheduler.

    ``client.ncores()`` and not ``client.scheduler_info()``: the latter returns a cache that
    the client's periodic refresh replaces with one holding no workers, a race with threads.
    """
    return set(client.ncores())


def new_query_id() -> str:
    """A fresh query id (task keys and communicator tag scopes use it)."""
    return uuid.uuid4().hex


def _height(output: RankOutput) -> int:
    return 0 if output.frame is None else output.frame.height


def _head(output: RankOutput, n: int) -> pl.DataFrame:
    return pl.DataFrame() if output.frame is None else output.frame.head(n)


class DistributedQueryResult:
    """A query result whose parts stay on the workers until read (polars' ``QueryResult``)."""

    def __init__(
        self,
        client: Client,
        plan: DistributedPlan,
        futures: list[Future],
        workers: Sequence[str] | None = None,
    ) -> None:
        self._client = client
        self._plan = plan
        self._futures = futures
        self._workers = workers

    @property
    def head(self) -> HeadFrame:
        """The first 5 rows; ``head(n)`` gives the first ``n`` (read rank by rank, no more)."""
        return HeadFrame.of(self._first_rows(5), self._first_rows)

    def _first_rows(self, n: int) -> pl.DataFrame:
        """The first ``n`` rows of the result, reading ranks in order until there are enough."""
        if n < 0:
            return self.lazy().collect().head(n)
        frames, rows = [], 0
        for future in self._futures:
            if rows >= n:
                break
            part = self._client.submit(_head, future, n - rows, pure=False).result()
            frames.append(part)
            rows += part.height
        return concat_result(self._plan, frames).head(n)

    @property
    def n_rows_total(self) -> int | None:
        """Rows of the whole result, counted on the workers."""
        heights = [self._client.submit(_height, f, pure=False) for f in self._futures]
        return sum(self._client.gather(heights, direct=True))

    def lazy(self) -> pl.LazyFrame:
        """Fetch the parts (rank order) and continue with polars."""
        return gather_result(self._client, self._plan, self._futures, self._workers)[0].lazy()

    def __repr__(self) -> str:
        return f"DistributedQueryResult(ranks={len(self._futures)})"
