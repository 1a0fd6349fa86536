"""Client side of the two-namespace test: run inside the first namespace by ``ip netns exec``.

Prints one JSON line: the ranks' host names and what every rank received, for each transport.
"""

from __future__ import annotations

import json
import socket
import sys


def exchange(comm_id: str) -> dict:
    """Each rank: alltoall 8 MiB per peer, allgather the host names."""
    from engine.comm.bootstrap import communicator_for

    comm = communicator_for(comm_id)
    size = 8 * 1024 * 1024
    out = comm.alltoall(1, [bytes([comm.rank + 1]) * size for _ in range(comm.nranks)])
    hosts = comm.allgather(2, socket.gethostname().encode())
    comm.barrier(3)
    return {
        "rank": comm.rank,
        "received": [[len(p), memoryview(p)[0], memoryview(p)[-1]] for p in out],
        "hosts": [bytes(h).decode() for h in hosts],
    }


def main(scheduler_file: str) -> None:
    from distributed import Client

    from engine.comm.bootstrap import open_communicators

    report = {}
    with Client(scheduler_file=scheduler_file, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        for transport in ("ucxx", "tcp"):
            group = open_communicators(client, transport=transport, timeout_s=30)
            try:
                futures = [
                    client.submit(exchange, group.comm_id, workers=[w], pure=False)
                    for w in group.worker_addresses
                ]
                report[transport] = {
                    "addresses": group.worker_addresses,
                    "results": client.gather(futures),
                }
            finally:
                group.close()
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1])
