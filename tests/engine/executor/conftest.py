"""A real in-process :class:`Communicator`: ranks are threads exchanging through queues.

Used to test the rank executor without a cluster. It implements the whole interface (tags,
point-to-point, collectives, timeouts), it is not a mock. Also ``bytes_shuffled_by``: what a
query moved on a real ``DaskEngine``, its answer checked against polars.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.comm.base import Communicator, PeerFailedError
from engine.executor.exchange import SpillPolicy
from engine.executor.rank import PartitionLimits, RankExecutor
from engine.executor.results import concat_result, rank_frames
from engine.plan import plan_lazyframe


class _World:
    def __init__(self, nranks: int) -> None:
        self.nranks = nranks
        self.boxes: dict[tuple[int, int, int], queue.Queue[bytes]] = {}
        self.lock = threading.Lock()

    def box(self, src: int, dst: int, tag: int) -> queue.Queue[bytes]:
        with self.lock:
            return self.boxes.setdefault((src, dst, tag), queue.Queue())


class ThreadComm(Communicator):
    """One rank of a :class:`_World`."""

    def __init__(self, world: _World, rank: int, timeout_s: float = 30.0) -> None:
        self._world = world
        self._rank = rank
        self._timeout_s = timeout_s
        self.bytes_sent = 0

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def nranks(self) -> int:
        return self._world.nranks

    def send(self, peer: int, tag: int, payload: bytes | memoryview) -> None:
        self.bytes_sent += len(payload)
        self._world.box(self._rank, peer, tag).put(bytes(payload))

    def recv(self, peer: int, tag: int) -> bytes:
        try:
            return self._world.box(peer, self._rank, tag).get(timeout=self._timeout_s)
        except queue.Empty:
            raise PeerFailedError(f"rank {self._rank}: no message from {peer} tag {tag}") from None

    def alltoall(self, tag: int, payloads: Sequence[bytes | memoryview]) -> list[bytes]:
        for peer, payload in enumerate(payloads):
            self.send(peer, tag, payload)
        return [self.recv(peer, tag) for peer in range(self.nranks)]

    def allgather(self, tag: int, payload: bytes | memoryview) -> list[bytes]:
        return self.alltoall(tag, [payload] * self.nranks)

    def barrier(self, tag: int) -> None:
        self.allgather(tag, b"")

    @contextlib.contextmanager
    def query_scope(self, scope_id: int) -> Iterator[ThreadComm]:
        """Same world, tags moved into the scope's own range."""
        yield _ScopedThreadComm(self._world, self._rank, scope_id, self._timeout_s)

    def close(self) -> None:
        pass


class _ScopedThreadComm(ThreadComm):
    def __init__(self, world: _World, rank: int, scope_id: int, timeout_s: float) -> None:
        super().__init__(world, rank, timeout_s)
        self._offset = scope_id << 32

    def send(self, peer: int, tag: int, payload: bytes | memoryview) -> None:
        super().send(peer, self._offset + tag, payload)

    def recv(self, peer: int, tag: int) -> bytes:
        return super().recv(peer, self._offset + tag)


def run_ranks(nranks: int, body: Callable[[ThreadComm], Any]) -> list[Any]:
    """Run ``body(comm)`` on ``nranks`` threads; return results by rank, re-raising errors."""
    world = _World(nranks)
    results: list[Any] = [None] * nranks
    errors: list[BaseException] = []

    def target(rank: int) -> None:
        try:
            results[rank] = body(ThreadComm(world, rank))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=target, args=(r,)) for r in range(nranks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    if errors:
        raise errors[0]
    return results


@pytest.fixture
def on_threads() -> Callable[..., pl.DataFrame]:
    """Run a LazyFrame through planner and rank executors on ``nranks`` threads.

    Returns the result concatenated in rank order, exactly as the client does.
    """

    def run(
        lf: pl.LazyFrame,
        nranks: int,
        broadcast_limit: int = 1 << 25,
        spills: Sequence[SpillPolicy] | None = None,
        **limits: int,
    ) -> pl.DataFrame:
        """``spills``: each rank's spill policy (default: nothing spills)."""
        plan = plan_lazyframe(lf, broadcast_limit=broadcast_limit)

        def body(comm: ThreadComm) -> list[pl.DataFrame]:
            tags = itertools.count()
            with comm.query_scope(1) as scoped:
                executor = RankExecutor(
                    plan,
                    scoped,
                    rank_frames(plan, comm.rank, comm.nranks),
                    tags=lambda: next(tags),
                    limits=PartitionLimits(**limits),
                    spill=None if spills is None else spills[comm.rank],
                )
                return executor.run()

        parts = run_ranks(nranks, body)
        return concat_result(plan, [frame for rank in parts for frame in rank])

    return run


@pytest.fixture
def rank_threads() -> Callable[[int, Callable[[ThreadComm], Any]], list[Any]]:
    """:func:`run_ranks`, for tests that drive the rank executor themselves."""
    return run_ranks


@pytest.fixture(scope="session")
def bytes_shuffled_by() -> Callable[[Any, pl.LazyFrame], int]:
    """``(engine, query) -> bytes the ranks shuffled``, once the answer is checked.

    The engine's answer must equal polars' (in any row order) with no fallback: the bytes
    then show which way an exchange went.
    """

    def run(engine: Any, query: pl.LazyFrame) -> int:
        assert_frame_equal(query.collect(engine=engine), query.collect(), check_row_order=False)
        stats = engine.last_query_stats
        assert stats is not None
        assert not stats.fallbacks
        return stats.bytes_shuffled

    return run
