"""Shuffles whose received data is many times a rank's budget: bounded memory, right answer.

Real worker processes of a LocalCluster, a real communicator (UCXX and TCP), the real rank
executor; only the budget is small so that a few MiB of data exceed it many times over.
"""

from __future__ import annotations

import itertools
import sys

import cloudpickle
import polars as pl
import pytest
from distributed import Client, LocalCluster
from polars.testing import assert_frame_equal

from engine.comm import open_communicators
from engine.executor.exchange import SpillPolicy
from engine.plan import DistributedPlan, plan_lazyframe

pytestmark = pytest.mark.timeout(180)

cloudpickle.register_pickle_by_value(sys.modules[__name__])

BUDGET = 256 * 1024
MESSAGE = 32 * 1024
MIB = 1024 * 1024


def _run_rank(
    comm_id: str, plan: DistributedPlan, budget: int, message: int
) -> tuple[list[pl.DataFrame], SpillPolicy, list[str], tuple[dict, ...]]:
    import os

    from distributed import get_worker

    from engine.comm import communicator_for
    from engine.executor.rank import PartitionLimits, RankExecutor
    from engine.executor.results import rank_frames
    from engine.stats import StageRecorder

    comm = communicator_for(comm_id)
    directory = os.path.join(get_worker().local_directory, f"spill-test-{comm_id}")
    policy = SpillPolicy(directory, budget, message)
    tags = itertools.count()
    with comm.query_scope(1) as scoped:
        frames = rank_frames(plan, comm.rank, comm.nranks)
        limits = PartitionLimits(max_rows_per_partition=20_000)
        stages = StageRecorder(plan, scoped, spill=policy)
        executor = RankExecutor(
            plan, scoped, frames, lambda: next(tags), limits, spill=policy, stages=stages
        )
        parts = executor.run()
    left = os.listdir(directory) if os.path.isdir(directory) else []
    return parts, policy, left, stages.records()


@pytest.mark.parametrize("transport", ["ucxx", "tcp"])
def test_shuffle_many_times_the_budget_spills_and_stays_bounded(dask_client_of_size, transport):
    from engine.comm.ucxx_transport import ucxx_importable

    if transport == "ucxx" and not ucxx_importable():
        pytest.skip("ucxx is not importable here (pip install ucxx-cu12)")
    n = 120_000
    facts = pl.LazyFrame(
        {"k": [i % 5003 for i in range(n)], "v": [float(i) for i in range(n)]},
    ).with_columns(s=pl.format("name-{}", pl.col("k")))
    dims = pl.LazyFrame({"k": list(range(5003)), "w": [i % 17 for i in range(5003)]})
    lf = facts.join(dims, on="k").group_by("w").agg(pl.col("v").sum(), pl.col("s").n_unique())
    plan = plan_lazyframe(lf, broadcast_limit=1)
    assert not plan.fallbacks

    client = dask_client_of_size(2)
    group = open_communicators(client, transport=transport, timeout_s=60)
    try:
        futures = [
            client.submit(_run_rank, group.comm_id, plan, BUDGET, MESSAGE, workers=[w], pure=False)
            for w in group.worker_addresses
        ]
        results = client.gather(futures)
    finally:
        group.close()

    from engine.executor.results import concat_result

    got = concat_result(plan, [frame for parts, *_ in results for frame in parts])
    assert_frame_equal(got, lf.collect(), check_row_order=False)
    for _, policy, left_on_disk, records in results:
        # The sending sides are over the budget too, so they go in passes (grace.Spool):
        # many exchanges, together many times the budget, each received within it.
        assert sum(e.received_bytes for e in policy.exchanges) > 4 * BUDGET, policy.exchanges
        assert policy.spilled_bytes > 0
        assert policy.peak_in_memory_bytes <= BUDGET + MESSAGE, policy.exchanges
        assert left_on_disk == []
        # last_query_stats shows where it spilled: every spilled byte is charged to a stage
        assert sum(record["bytes_spilled"] for record in records) == policy.spilled_bytes


def test_without_a_budget_nothing_spills(dask_client_of_size):
    lf = (
        pl.LazyFrame({"k": list(range(5000)), "v": list(range(5000))})
        .group_by("k")
        .agg(pl.col("v").median())
    )
    plan = plan_lazyframe(lf)
    client = dask_client_of_size(2)
    group = open_communicators(client, transport="tcp", timeout_s=60)
    try:
        futures = [
            client.submit(_run_rank, group.comm_id, plan, None, None, workers=[w], pure=False)
            for w in group.worker_addresses
        ]
        results = client.gather(futures)
    finally:
        group.close()
    for _, policy, _, records in results:
        assert policy.spilled_bytes == 0
        assert all(record["bytes_spilled"] == 0 for record in records)
        assert len(policy.exchanges) == 1


PEER_MIB = 128
"""Each rank sends this much to its peer (and as much to itself): 256 MiB per rank in all."""


def test_a_budget_bounds_the_workers_peak_memory_not_just_its_counter():
    """The process's own peak (``VmHWM``), not ``SpillPolicy``'s count, stays below the data.

    ``benchmarks.shuffle_memory.shuffle_rank`` resets the peak just before one shuffle and
    reads it after. A fresh cluster: a used worker's allocator hides a peak. The budgeted
    shuffle runs first; then the same shuffle without a budget shows that the measurement
    sees received data (it rises by at least what came from the peer).
    """
    from benchmarks.shuffle_memory import shuffle_rank

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit=0,
            env={"POLARS_MAX_THREADS": "1"},
        ) as cluster,
        Client(cluster) as client,
    ):
        group = open_communicators(client, transport="tcp", timeout_s=60)
        try:
            rises = {}
            for budget, tag in ((2 * MIB, 0), (None, 10)):
                futures = [
                    client.submit(
                        shuffle_rank,
                        group.comm_id,
                        2 * PEER_MIB,
                        budget,
                        tag,
                        workers=[w],
                        pure=False,  # one task per rank: equal arguments, distinct keys
                    )
                    for w in group.worker_addresses
                ]
                rows = client.gather(futures)
                rises[budget] = [row["peak_rise_mib"] for row in rows]
        finally:
            group.close()
    bounded, unbounded = rises[2 * MIB], rises[None]
    report = f"peak RSS rise per rank: {bounded} MiB with a 2 MiB budget, {unbounded} MiB without"
    assert all(rise >= PEER_MIB for rise in unbounded), report
    assert all(rise < PEER_MIB for rise in bounded), report  # it did not hold what came in
    assert max(bounded) < 0.5 * min(unbounded), report
