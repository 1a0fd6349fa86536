"""Payloads larger than a UCX chunk, and larger than 2**31 bytes, arrive whole."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import psutil
import pytest
from distributed import Client, LocalCluster

from engine.comm.peer import PeerCommunicator
from engine.comm.tcp import TcpTransport
from engine.comm.ucxx_transport import UcxxTransport

GIB = 1024**3


def _pair(make) -> list[PeerCommunicator]:
    """Two ranks in this process, connected over real endpoints."""
    transports = [make(), make()]
    table = [dict(t.local_address()) for t in transports]
    comms = [PeerCommunicator(rank, 2, t, 30.0) for rank, t in enumerate(transports)]
    threads = [threading.Thread(target=c.connect, args=(table, 30.0)) for c in comms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return comms


def _alltoall_both(comms: list[PeerCommunicator], payloads: list[list]) -> list[list]:
    results: list[list] = [[], []]

    def run(rank: int) -> None:
        results[rank] = comms[rank].alltoall(0, payloads[rank])

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.timeout(60)
@pytest.mark.parametrize("transport", ["ucxx", "tcp"])
def test_payload_spanning_many_chunks(transport):
    comm_id = uuid.uuid4().bytes
    make = {
        "ucxx": lambda: UcxxTransport(chunk_bytes=1 << 20),
        "tcp": lambda: TcpTransport("127.0.0.1", comm_id),
    }[transport]
    comms = _pair(make)
    try:
        rng = np.random.default_rng(3)
        payloads = [[rng.bytes(n) for n in sizes] for sizes in ([0, 10_500_001], [(3 << 20), 1])]
        results = _alltoall_both(comms, payloads)
        for rank in range(2):
            assert [bytes(p) for p in results[rank]] == [payloads[src][rank] for src in range(2)]
    finally:
        for comm in comms:
            comm.close()


def _big_exchange(comm_id: str, nbytes: int) -> list[tuple[int, int, int]]:
    from engine.comm.bootstrap import communicator_for

    comm = communicator_for(comm_id)
    payload = np.full(nbytes, comm.rank + 1, dtype=np.uint8)
    payload[-1] = 200 + comm.rank
    out = comm.alltoall(0, [payload, payload])
    return [(memoryview(p).nbytes, memoryview(p)[0], memoryview(p)[-1]) for p in out]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("transport", ["ucxx", "tcp"])
def test_payload_over_two_gib(transport, open_group):
    nbytes = 2 * GIB + 4096
    if psutil.virtual_memory().available < 5 * nbytes:
        pytest.skip(f"needs {5 * nbytes / GIB:.0f} GiB of free memory for two ranks")
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit=0,
        ) as cluster,
        Client(cluster) as client,
    ):
        group = open_group(client, transport, timeout_s=120)
        futures = [
            client.submit(_big_exchange, group.comm_id, nbytes, workers=[w], pure=False)
            for w in group.worker_addresses
        ]
        results = client.gather(futures)
        group.close()
    for rank in range(2):
        assert results[rank] == [(nbytes, 1, 200), (nbytes, 2, 201)]
