"""A dead peer or a failed bootstrap surfaces as an error within the timeout, never a hang."""

from __future__ import annotations

import os
import signal
import time
import uuid

import psutil
import pytest
from distributed import Client, Event, LocalCluster

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
    killed_at = time.monotonic()
    for rank in (0, 1):
        with pytest.raises(PeerFailedError, match=r"alltoall\(tag=0\) on rank \d.*rank 2"):
            futures[rank].result(timeout=TIMEOUT_S + 30)
        assert time.monotonic() - killed_at < TIMEOUT_S + 10
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
    frozen_at = time.monotonic()
    try:
        for rank in (0, 1):
            with pytest.raises(PeerFailedError, match=r"alltoall\(tag=0\) on rank \d.*rank 2"):
                futures[rank].result(timeout=TIMEOUT_S + 30)
            assert time.monotonic() - frozen_at < TIMEOUT_S + 10
    finally:
        os.kill(frozen, signal.SIGCONT)
    client.cancel(futures)
