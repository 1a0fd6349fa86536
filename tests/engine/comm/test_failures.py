"""A dead peer or a failed bootstrap surfaces as an error within the timeout, never a hang."""

from __future__ import annotations

import os
import signal
import time
import uuid

import psutil
import pytest
from distributed import Client, Event, Future, LocalCluster

from engine.comm import CommunicatorError, PeerFailedError, open_communicators
from engine.comm.bootstrap import WORKER_ATTRIBUTE

TIMEOUT_S = 5.0


@pytest.fixture
def killable_cluster():
    """A cluster of its own: the test kills one of its workers."""
    with (
        LocalCluster(
            n_workers=3,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit="1GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


BOUND_S = TIMEOUT_S + 10
"""A surviving rank raises within the communicator timeout plus slack for a loaded machine."""


def assert_ranks_raise_within(futures: list[Future], *, killed_at: float, event: str) -> None:
    """Ranks 0 and 1 raise ``PeerFailedError`` naming rank 2 within :data:`BOUND_S` of ``event``.

    Timed by each rank's own clock when its communicator raised (``raised_at``, set by
    ``run_alltoall_loop``; one host, one wall clock), so the error's trip through the scheduler
    to this client is not counted; the client waits for it with a generous deadline.
    """
    for rank in (0, 1):
        with pytest.raises(
            PeerFailedError, match=r"alltoall\(tag=0\) on rank \d.*rank 2"
        ) as raised:
            futures[rank].result(timeout=BOUND_S + 60)
        detected_s = raised.value.raised_at - killed_at
        client_s = time.time() - killed_at
        assert 0 <= detected_s < BOUND_S, (
            f"rank {rank} raised {detected_s:.2f} s after {event} (bound {BOUND_S} s); "
            f"this client had the error after {client_s:.2f} s"
        )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["ucxx", "tcp"])
def test_worker_killed_mid_alltoall_fails_every_rank_within_timeout(
    killable_cluster, open_group, rank_tasks, transport
):
    client = killable_cluster
    group = open_group(client, transport, timeout_s=TIMEOUT_S)
    pids = client.run(os.getpid)
    started = f"comm-test-{uuid.uuid4().hex}"
    futures = [
        client.submit(
            rank_tasks.run_alltoall_loop, group.comm_id, 4 << 20, started, workers=[w], pure=False
        )
        for w in group.worker_addresses
    ]
    assert Event(started, client=client).wait(timeout=60), "no rank got through an alltoall"
    os.kill(pids[group.worker_addresses[2]], signal.SIGKILL)
    assert_ranks_raise_within(futures, killed_at=time.time(), event="the kill")
    client.cancel(futures)


@pytest.mark.timeout(120)
def test_failed_bootstrap_closes_what_it_opened(dask_client_of_size):
    client = dask_client_of_size(3)

    def state(dask_worker) -> tuple[list[str], int]:
        listening = [
            c
            for c in psutil.Process().net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN
        ]
        return sorted(getattr(dask_worker, WORKER_ATTRIBUTE, {})), len(listening)

    before = client.run(state)
    with pytest.raises((CommunicatorError, TimeoutError)):
        open_communicators(client, transport="tcp", timeout_s=1e-6)
    deadline = time.monotonic() + 30
    while client.run(state) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.run(state) == before


@pytest.mark.timeout(120)
@pytest.mark.parametrize("transport", ["ucxx", "tcp"])
def test_frozen_peer_fails_every_rank_within_timeout(
    killable_cluster, open_group, rank_tasks, transport
):
    """A peer that stops answering (SIGSTOP: alive, sockets open) is caught by heartbeats."""
    client = killable_cluster
    group = open_group(client, transport, timeout_s=TIMEOUT_S)
    pids = client.run(os.getpid)
    started = f"comm-test-{uuid.uuid4().hex}"
    futures = [
        client.submit(
            rank_tasks.run_alltoall_loop, group.comm_id, 4 << 20, started, workers=[w], pure=False
        )
        for w in group.worker_addresses
    ]
    assert Event(started, client=client).wait(timeout=60), "no rank got through an alltoall"
    frozen = pids[group.worker_addresses[2]]
    os.kill(frozen, signal.SIGSTOP)
    try:
        assert_ranks_raise_within(futures, killed_at=time.time(), event="SIGSTOP")
    finally:
        os.kill(frozen, signal.SIGCONT)
    client.cancel(futures)
