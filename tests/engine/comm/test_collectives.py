"""alltoall, allgather, barrier, send/recv over real workers and real endpoints, both transports."""

from __future__ import annotations

import pytest

TRANSPORTS = ("ucxx", "tcp")
MAX_BYTES = 24 * 1024 * 1024

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("nranks", [1, 2, 3, 4])
def test_random_sizes(dask_client_of_size, open_group, run_on_ranks, rank_tasks, transport, nranks):
    client = dask_client_of_size(nranks)
    group = open_group(client, transport)
    assert (group.nranks, group.transport) == (nranks, transport)
    for seed in (1, 2):
        results = run_on_ranks(client, group, rank_tasks.run_collectives, seed, MAX_BYTES)
        assert [r["rank"] for r in results] == list(range(nranks))
        for dst, result in enumerate(results):
            assert result["received"] == [results[src]["sent"][dst] for src in range(nranks)]
            expected_gather = [results[src]["sent"][(src + 1) % nranks] for src in range(nranks)]
            assert result["gathered"] == expected_gather


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_many_back_to_back_collectives(
    dask_client_of_size, open_group, run_on_ranks, rank_tasks, transport
):
    client = dask_client_of_size(3)
    group = open_group(client, transport)
    assert run_on_ranks(client, group, rank_tasks.run_many_small, 200) == [200] * 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_point_to_point_ring_and_self(
    dask_client_of_size, open_group, run_on_ranks, rank_tasks, transport
):
    client = dask_client_of_size(4)
    group = open_group(client, transport)
    results = run_on_ranks(client, group, rank_tasks.run_ring, group.new_scope_id())
    assert results == [(f"from {(r - 1) % 4}".encode(), b"self") for r in range(4)]


def test_alltoall_needs_one_payload_per_rank(dask_client_of_size, open_group, rank_tasks):
    client = dask_client_of_size(2)
    group = open_group(client, "tcp")

    def wrong_count(comm_id: str) -> None:
        rank_tasks.communicator_for(comm_id).alltoall(0, [b""])

    future = client.submit(wrong_count, group.comm_id, workers=[group.worker_addresses[0]])
    with pytest.raises(ValueError, match="one payload per rank: got 1 for 2 ranks"):
        future.result()
