"""Functions that run inside rank tasks on the workers (shipped by value: tests are no package)."""

from __future__ import annotations

import hashlib
import threading
import time

import numpy as np

from engine.comm.base import PeerFailedError, QueryAbortedError
from engine.comm.bootstrap import communicator_for


def digest(payload: bytes | memoryview) -> str:
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def payload_of(seed: int, src: int, dst: int, size: int) -> bytes:
    return np.random.default_rng([seed, src, dst]).bytes(size)


def sizes_of(seed: int, src: int, nranks: int, max_bytes: int) -> list[int]:
    """0 B, 1 B, small and large payloads, mixed so every pair sees several kinds."""
    rng = np.random.default_rng([seed, src, 99])
    choices = [0, 1, int(rng.integers(2, 64 * 1024)), int(rng.integers(64 * 1024, max_bytes))]
    return [choices[int(rng.integers(0, len(choices)))] for _ in range(nranks)]


def run_collectives(comm_id: str, seed: int, max_bytes: int) -> dict:
    """One alltoall, allgather and barrier with random sizes; report digests for the client."""
    comm = communicator_for(comm_id)
    rank, nranks = comm.rank, comm.nranks
    sizes = sizes_of(seed, rank, nranks, max_bytes)
    sent = [payload_of(seed, rank, dst, size) for dst, size in enumerate(sizes)]
    received = comm.alltoall(7, sent)
    gathered = comm.allgather(8, sent[(rank + 1) % nranks])
    comm.barrier(9)
    return {
        "rank": rank,
        "sent": [digest(p) for p in sent],
        "received": [digest(p) for p in received],
        "gathered": [digest(p) for p in gathered],
    }


def run_many_small(comm_id: str, rounds: int) -> int:
    """Back-to-back collectives reusing one tag; every result must be this round's."""
    comm = communicator_for(comm_id)
    rank, nranks = comm.rank, comm.nranks
    for round_ in range(rounds):
        out = comm.alltoall(1, [f"{round_}:{rank}->{dst}".encode() for dst in range(nranks)])
        assert [bytes(p) for p in out] == [
            f"{round_}:{src}->{rank}".encode() for src in range(nranks)
        ]
        got = comm.allgather(1, f"{round_}:{rank}".encode())
        assert [bytes(p) for p in got] == [f"{round_}:{src}".encode() for src in range(nranks)]
        comm.barrier(1)
    return rounds


def run_ring(comm_id: str, scope_id: int) -> tuple[bytes, bytes]:
    """Point-to-point: pass a token around the ring, and send one to ourselves."""
    comm = communicator_for(comm_id)
    with comm.query_scope(scope_id) as q:
        rank, nranks = q.rank, q.nranks
        q.send(rank, 5, b"self")
        q.send((rank + 1) % nranks, 4, f"from {rank}".encode())
        return bytes(q.recv((rank - 1) % nranks, 4)), bytes(q.recv(rank, 5))


def run_two_scopes_at_once(comm_id: str, scope_ids: tuple[int, int]) -> list[list[bytes]]:
    """Two queries in two threads of one worker, same tags: neither sees the other's data."""
    comm = communicator_for(comm_id)
    results: list[list[bytes]] = [[], []]

    def query(index: int) -> None:
        with comm.query_scope(scope_ids[index]) as q:
            for _ in range(20):
                out = q.alltoall(0, [f"q{index} {q.rank}".encode()] * q.nranks)
                results[index] = [bytes(p) for p in out]

    threads = [threading.Thread(target=query, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def run_failing_query(comm_id: str, scope_id: int, failing_rank: int) -> str:
    """One rank raises inside the query; the others must stop with QueryAbortedError."""
    comm = communicator_for(comm_id)
    try:
        with comm.query_scope(scope_id) as q:
            if q.rank == failing_rank:
                raise RuntimeError("fragment failed on purpose")
            q.alltoall(0, [b"x"] * q.nranks)
    except QueryAbortedError as error:
        return f"aborted: {error}"
    except RuntimeError as error:
        return f"raised: {error}"
    return "completed"


def run_alltoall_loop(comm_id: str, nbytes: int, started_event: str) -> None:
    """Alltoall until a peer fails; signal the client once data is flowing.

    The error carries ``raised_at``, this rank's ``time.time()`` when the communicator raised:
    tests time the detection itself, not its trip through the scheduler to the client.
    """
    from distributed import Event

    comm = communicator_for(comm_id)
    payloads = [b"\1" * nbytes] * comm.nranks
    comm.alltoall(0, payloads)
    Event(started_event).set()
    try:
        while True:
            comm.alltoall(0, payloads)
    except PeerFailedError as error:
        error.raised_at = time.time()  # type: ignore[attr-defined]
        raise
