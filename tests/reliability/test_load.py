"""Load: many small queries on one engine, and queries from several client threads at once.

Worker memory (RSS) and open file descriptors are measured before and after and printed (see
them with ``pytest -rP``); the bounds are generous because the allocator keeps freed pages.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from typing import Any

import polars as pl
import psutil
import pytest
from polars.testing import assert_frame_equal

from engine.dask import DaskEngine
from engine.hardware_binding import HardwareBindingPolicy

pytestmark = pytest.mark.timeout(240)

QUERIES = 200
RSS_GROWTH_LIMIT_BYTES = 150 * 1024 * 1024
FD_GROWTH_LIMIT = 8


@pytest.fixture(scope="module")
def engine(dask_client_of_size) -> Iterator[DaskEngine]:
    options = {"hardware_binding": HardwareBindingPolicy(enabled=False), "transport": "tcp"}
    with DaskEngine(dask_client=dask_client_of_size(2), engine_options=options) as engine:
        yield engine


def process_usage() -> dict[str, int]:
    """Runs on a worker: its resident memory and open file descriptors."""
    process = psutil.Process(os.getpid())
    return {"rss": process.memory_info().rss, "fds": process.num_fds()}


def small_query(i: int) -> pl.LazyFrame:
    frame = pl.LazyFrame({"k": [j % 7 for j in range(64)], "v": list(range(i, i + 64))})
    return frame.filter(pl.col("v") % 3 != 0).group_by("k").agg(pl.col("v").sum()).sort("k")


def test_200_queries_keep_worker_memory_and_fds_flat(engine, capsys):
    for i in range(5):  # warm-up: imports, first endpoints, polars' thread pool
        small_query(i).collect(engine=engine)
    before = engine.client.run(process_usage)
    for i in range(QUERIES):
        assert_frame_equal(small_query(i).collect(engine=engine), small_query(i).collect())
    after = engine.client.run(process_usage)
    with capsys.disabled():
        print(
            f"\n{QUERIES} queries on {len(before)} workers (load average {os.getloadavg()[0]:.1f})"
        )
        for rank, address in enumerate(engine._workers):
            b, a = before[address], after[address]
            print(
                f"  rank {rank}: RSS {b['rss'] / 2**20:.1f} -> {a['rss'] / 2**20:.1f} MiB, "
                f"open fds {b['fds']} -> {a['fds']}"
            )
    for address in before:
        assert after[address]["rss"] - before[address]["rss"] < RSS_GROWTH_LIMIT_BYTES
        assert after[address]["fds"] - before[address]["fds"] <= FD_GROWTH_LIMIT


def test_four_client_threads_get_correct_results(engine):
    per_thread = 10
    errors: list[BaseException] = []
    wrong: list[int] = []

    def submit(thread: int) -> None:
        for n in range(per_thread):
            i = thread * 100 + n
            try:
                got = small_query(i).collect(engine=engine)
            except BaseException as error:
                errors.append(error)
                return
            if not got.equals(small_query(i).collect()):
                wrong.append(i)

    threads = [threading.Thread(target=submit, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in threads), "a client thread hangs"
    assert not errors, errors
    assert not wrong, f"wrong results for queries {wrong}"


def test_threads_mixing_good_and_failing_queries(engine):
    """A query failing in one thread must not disturb the others (scopes are per query)."""
    results: dict[str, Any] = {}

    def good() -> None:
        results["good"] = [small_query(i).collect(engine=engine) for i in range(5)]

    def bad() -> None:
        failing = (
            pl.LazyFrame({"a": ["1", "x"] * 8})
            .select(pl.col("a").cast(pl.Int64))
            .group_by("a")
            .len()
        )
        for _ in range(5):
            with pytest.raises(pl.exceptions.InvalidOperationError):
                failing.collect(engine=engine)
        results["bad"] = "raised every time"

    threads = [threading.Thread(target=good), threading.Thread(target=bad)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results.get("bad") == "raised every time"
    for i, got in enumerate(results["good"]):
        assert_frame_equal(got, small_query(i).collect())
