"""Query scopes keep queries apart; two engines on one cluster keep their communicators apart."""

from __future__ import annotations

import time

import polars as pl
import pytest

from engine.comm import CommunicatorError, communicator_for
from engine.comm.bootstrap import WORKER_ATTRIBUTE
from engine.dask import DaskEngine

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("transport", ["ucxx", "tcp"])
def test_two_queries_at_once_never_mix(
    dask_client_of_size, open_group, run_on_ranks, rank_tasks, transport
):
    client = dask_client_of_size(2)
    group = open_group(client, transport)
    scopes = (group.new_scope_id(), group.new_scope_id())
    for rank, (first, second) in enumerate(
        run_on_ranks(client, group, rank_tasks.run_two_scopes_at_once, scopes)
    ):
        assert first == [f"q0 {src}".encode() for src in range(2)], rank
        assert second == [f"q1 {src}".encode() for src in range(2)], rank


@pytest.mark.parametrize("transport", ["ucxx", "tcp"])
def test_failed_query_stops_every_rank_then_next_query_is_clean(
    dask_client_of_size, open_group, run_on_ranks, rank_tasks, transport
):
    client = dask_client_of_size(3)
    group = open_group(client, transport, timeout_s=60)
    started = time.monotonic()
    outcomes = run_on_ranks(client, group, rank_tasks.run_failing_query, group.new_scope_id(), 1)
    assert time.monotonic() - started < 30, "an abort must not wait for the peer timeout"
    assert outcomes[1] == "raised: fragment failed on purpose"
    for rank in (0, 2):
        assert outcomes[rank].startswith("aborted: alltoall(tag=0) on rank"), outcomes[rank]
        assert "rank 1 left query scope" in outcomes[rank]
        assert "fragment failed on purpose" in outcomes[rank]
    assert run_on_ranks(client, group, rank_tasks.run_many_small, 5) == [5] * 3


def test_scope_ids_are_validated(dask_client_of_size, open_group, rank_tasks):
    client = dask_client_of_size(1)
    group = open_group(client, "tcp")

    def enter(comm_id: str, scope_id: object) -> None:
        with rank_tasks.communicator_for(comm_id).query_scope(scope_id):
            pass

    for bad, match in [(0, "must be in 1..4294967295"), (2**32, "must be in"), ("7", "an int")]:
        future = client.submit(enter, group.comm_id, bad, pure=False)
        with pytest.raises((ValueError, TypeError), match=match):
            future.result()

    def enter_twice(comm_id: str, scope_id: int) -> None:
        enter(comm_id, scope_id)
        enter(comm_id, scope_id)

    future = client.submit(enter_twice, group.comm_id, group.new_scope_id(), pure=False)
    with pytest.raises(CommunicatorError, match="was already used on rank 0"):
        future.result()


@pytest.mark.parametrize("transport", ["ucxx", "tcp"])
def test_two_groups_on_one_cluster(
    dask_client_of_size, open_group, run_on_ranks, rank_tasks, transport
):
    client = dask_client_of_size(3)
    first, second = open_group(client, transport), open_group(client, "tcp")
    assert first.comm_id != second.comm_id
    results = {}
    futures = {
        name: [
            client.submit(rank_tasks.run_many_small, group.comm_id, 50, workers=[w], pure=False)
            for w in group.worker_addresses
        ]
        for name, group in (("first", first), ("second", second))
    }
    for name, pending in futures.items():
        results[name] = client.gather(pending)
    assert results == {"first": [50] * 3, "second": [50] * 3}
    first.close()
    assert run_on_ranks(client, second, rank_tasks.run_many_small, 3) == [3] * 3
    future = client.submit(communicator_for, first.comm_id, pure=False)
    with pytest.raises(CommunicatorError, match="has no communicator"):
        future.result()


def test_two_engines_on_one_cluster_and_shutdown_closes_everywhere(dask_client_of_size):
    client = dask_client_of_size(2)

    def registered(dask_worker) -> list[str]:
        return sorted(getattr(dask_worker, WORKER_ATTRIBUTE, {}))

    before = client.run(registered)
    with (
        DaskEngine(dask_client=client) as first,
        DaskEngine(dask_client=client, engine_options={"transport": "tcp"}) as second,
    ):
        assert first._comm.comm_id != second._comm.comm_id
        assert (first._comm.transport, second._comm.transport) == ("ucxx", "tcp")
        assert first.nranks == second.nranks == first._comm.nranks == 2
        assert first._workers == first._comm.worker_addresses
        for address, ids in client.run(registered).items():
            assert {first._comm.comm_id, second._comm.comm_id} <= set(ids) - set(before[address])
        assert pl.LazyFrame({"a": [1, 2]}).select(pl.sum("a")).collect(engine=second).item() == 3
    assert client.run(registered) == before
