"""SPMD dispatch on Dask: one task per rank, results fetched straight from the workers.

Client side: :func:`submit_ranks` sends each rank the plan (without the in-memory frames) and
its own row ranges of those frames, pinned to its worker. Worker side: :func:`run_rank` secedes
from the worker's thread pool (so a single-threaded worker can run ranks of several queries at
once), finds its communicator and runs :class:`engine.executor.rank.RankExecutor`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import uuid
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import polars as pl

from engine.comm.base import QueryAbortedError
from engine.executor.counting import CountingCommunicator
from engine.executor.exchange import SpillPolicy
from engine.executor.fragments import FragmentRunner, choose_fragment_engine
from engine.executor.frames import concat_frames
from engine.executor.rank import PartitionLimits, RankExecutor
from engine.executor.results import concat_result, rank_frames
from engine.executor.sinks import SinkRequest, write_part
from engine.plan.nodes import DistributedPlan, Fallback

if TYPE_CHECKING:
    from distributed import Client, Future

    from engine.comm.base import Communicator

__all__ = [
    "DistributedQueryResult",
    "RankOutput",
    "RankSettings",
    "apply_fallback_mode",
    "gather_result",
    "new_query_id",
    "run_rank",
    "submit_ranks",
]

CommunicatorLookup = Callable[[str], "Communicator"]
"""``comm_id -> communicator`` of this worker (runs on the worker)."""


@dataclass(frozen=True)
class RankOutput:
    """What one rank returns: its part of the result (kept on the worker until fetched)."""

    frame: pl.DataFrame | None
    bytes_sent: int
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class RankSettings:
    """Per-query settings every rank receives."""

    nranks: int
    comm_id: str | None
    query_id: str
    scope_id: int
    limits: PartitionLimits
    fragment_engine: Literal["auto", "cpu", "gpu"]
    sink: SinkRequest | None = None
    spill_fraction: float = 0.25
    """Received shuffle data above this share of the worker's memory limit spills to disk."""


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
    shipped = dataclasses.replace(plan, frames=())
    return [
        client.submit(
            run_rank,
            shipped,
            rank,
            rank_frames(plan, rank, len(workers)),
            settings,
            lookup,
            workers=[address],
            allow_other_workers=False,
            pure=False,
            key=f"polars-hpc-{settings.query_id}-rank-{rank}",
        )
        for rank, address in enumerate(workers)
    ]


def run_rank(
    plan: DistributedPlan,
    rank: int,
    frames: list[pl.DataFrame],
    settings: RankSettings,
    lookup: CommunicatorLookup | None,
) -> RankOutput:
    """Worker side: this rank's part of the result (or the part files it wrote)."""
    from distributed import get_worker, secede

    secede()
    worker = get_worker()
    limit = worker.memory_manager.memory_limit
    spill = SpillPolicy(
        os.path.join(worker.local_directory, "polars-hpc-spill"),
        int(limit * settings.spill_fraction) if limit else None,
    )
    runner = FragmentRunner(choose_fragment_engine(settings.fragment_engine))
    tags = itertools.count()
    assert plan.root is not None
    with _communicator(settings, rank, lookup).query_scope(settings.scope_id) as scoped:
        comm = CountingCommunicator(scoped)
        executor = RankExecutor(
            plan, comm, frames, lambda: next(tags), settings.limits, runner, spill
        )
        if settings.sink is None:
            frame = concat_frames(executor.run(), plan.output_schema)
            return RankOutput(frame, comm.bytes_sent)
        written = []
        for index, part in enumerate(executor.stream(plan.root)):
            empty = isinstance(part, pl.DataFrame) and part.height == 0
            if empty and (rank != 0 or index > 0):
                continue
            written.append(write_part(settings.sink, executor.lazy(part), rank, index))
        return RankOutput(None, comm.bytes_sent, tuple(written))


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
    client: Client, plan: DistributedPlan, futures: list[Future]
) -> tuple[pl.DataFrame, int]:
    """Every rank's part, fetched straight from its worker, in rank order; and bytes shuffled."""
    outputs = gather_outputs(client, futures)
    frames = [out.frame for out in outputs if out.frame is not None]
    return concat_result(plan, frames), sum(out.bytes_sent for out in outputs)


def gather_outputs(client: Client, futures: list[Future]) -> list[RankOutput]:
    """Every rank's output; if ranks failed, raise the root cause, not a peer's abort.

    When one rank fails, its peers leave their collectives with ``QueryAbortedError``; the
    error worth showing is the one that is not such an echo.
    """
    from distributed import wait

    wait(futures)
    errors = [f.exception() for f in futures if f.status == "error"]
    if errors:
        causes = [e for e in errors if not isinstance(e, QueryAbortedError)]
        raise (causes or errors)[0]
    return client.gather(futures, direct=True)


def new_query_id() -> str:
    """A fresh query id (task keys and communicator tag scopes use it)."""
    return uuid.uuid4().hex


def _height(output: RankOutput) -> int:
    return 0 if output.frame is None else output.frame.height


def _head(output: RankOutput, n: int) -> pl.DataFrame:
    return pl.DataFrame() if output.frame is None else output.frame.head(n)


class DistributedQueryResult:
    """A query result whose parts stay on the workers until read (polars' ``QueryResult``)."""

    def __init__(self, client: Client, plan: DistributedPlan, futures: list[Future]) -> None:
        self._client = client
        self._plan = plan
        self._futures = futures

    @property
    def head(self) -> pl.DataFrame | None:
        """The first 5 rows, read rank by rank until there are enough."""
        frames, rows = [], 0
        for future in self._futures:
            part = self._client.submit(_head, future, 5, pure=False).result()
            frames.append(part)
            rows += part.height
            if rows >= 5:
                break
        return concat_result(self._plan, frames).head(5)

    @property
    def n_rows_total(self) -> int | None:
        """Rows of the whole result, counted on the workers."""
        heights = [self._client.submit(_height, f, pure=False) for f in self._futures]
        return sum(self._client.gather(heights, direct=True))

    def lazy(self) -> pl.LazyFrame:
        """Fetch the parts (rank order) and continue with polars."""
        return gather_result(self._client, self._plan, self._futures)[0].lazy()

    def __repr__(self) -> str:
        return f"DistributedQueryResult(ranks={len(self._futures)})"
