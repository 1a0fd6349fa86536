"""The flow-controlled streaming all-to-all over real UCXX and TCP endpoints (ranks as threads)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from engine.comm.base import QueryAbortedError
from engine.comm.peer import PeerCommunicator
from engine.comm.protocol import Op
from engine.comm.stream import LOOKAHEAD
from engine.comm.tcp import TcpTransport
from engine.comm.ucxx_transport import UcxxTransport, ucxx_importable

pytestmark = pytest.mark.timeout(120)


def _world(transport: str, nranks: int) -> list[PeerCommunicator]:
    if transport == "ucxx" and not ucxx_importable():
        pytest.skip("ucxx is not importable here (pip install ucxx-cu12)")
    comm_id = uuid.uuid4().bytes
    make = {
        "ucxx": lambda: UcxxTransport(chunk_bytes=1 << 20),
        "tcp": lambda: TcpTransport("127.0.0.1", comm_id),
    }[transport]
    transports = [make() for _ in range(nranks)]
    table = [dict(t.local_address()) for t in transports]
    comms = [PeerCommunicator(rank, nranks, t, 30.0) for rank, t in enumerate(transports)]
    _on_threads(comms, lambda comm: comm.connect(table, 30.0))
    return comms


def _on_threads(comms: list[PeerCommunicator], body: Callable[[PeerCommunicator], Any]) -> list:
    results: list[Any] = [None] * len(comms)
    errors: list[BaseException] = []

    def run(rank: int) -> None:
        try:
            results[rank] = body(comms[rank])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(len(comms))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)
    if errors:
        raise errors[0]
    return results


def _messages(src: int, dst: int, seed: int) -> list[bytes]:
    """0 to 5 messages, sizes from 0 bytes to 300 KiB; seed 0: one small (eager) message."""
    rng = np.random.default_rng([seed, src, dst])
    if seed == 0:
        return [rng.bytes(100)]
    sizes = rng.integers(0, 300 * 1024, size=int(rng.integers(0, 6)))
    return [rng.bytes(int(size)) for size in sizes]


@pytest.fixture(params=["ucxx", "tcp"])
def world(request) -> Any:
    comms = _world(request.param, 3)
    yield comms
    for comm in comms:
        comm.close()


@pytest.mark.parametrize("room", [None, 100_000, 0], ids=["unbounded", "100k", "nothing"])
def test_every_message_arrives_in_order_per_source_and_tags_can_repeat(world, room):
    """Eager single messages, empty sequences and long ones, four calls on one tag."""
    nranks = len(world)
    room_of = None if room is None else (lambda: room)

    def body(comm: PeerCommunicator) -> list[list[tuple[int, int, bytes]]]:
        rounds = []
        for seed in (0, 1, 2, 0):
            outgoing = [_messages(comm.rank, dst, seed) for dst in range(nranks)]
            stream = comm.alltoall_stream(4, outgoing, room_of)
            got = [(s, i, bytes(p)) for s, i, p in stream]
            rounds.append(got)
        return rounds

    for rank, rounds in enumerate(_on_threads(world, body)):
        for seed, got in zip((0, 1, 2, 0), rounds, strict=True):
            own = _messages(rank, rank, seed)
            assert got[: len(own)] == [(rank, i, m) for i, m in enumerate(own)]
            for src in range(nranks):
                from_src = [(i, m) for s, i, m in got if s == src]
                assert from_src == list(enumerate(_messages(src, rank, seed)))


def test_receiver_holds_at_most_its_room_plus_one_message(world):
    """A consumer that keeps 200 KiB and drops the rest never has more waiting for it."""
    nranks, budget = len(world), 200 * 1024
    message = 64 * 1024

    def body(comm: PeerCommunicator) -> tuple[int, int, int]:
        rng = np.random.default_rng(comm.rank)
        outgoing = [
            [rng.bytes(message) for _ in range(12)] if dst != comm.rank else []
            for dst in range(nranks)
        ]
        held = peak = received = 0
        mailbox, scope = comm._core.mailbox, 0

        def room() -> int:
            return budget - held

        for _, _, payload in comm.alltoall_stream(9, outgoing, room):
            waiting = mailbox.queued_bytes(scope, Op.STREAM_DATA)
            peak = max(peak, held + len(payload) + waiting)
            received += len(payload)
            if held + len(payload) <= budget:
                held += len(payload)
        return peak, received, held

    for peak, received, held in _on_threads(world, body):
        assert received == (nranks - 1) * 12 * message
        assert held <= budget
        assert peak <= budget + message, f"held {peak} bytes at once, budget {budget}"


def test_senders_produce_messages_only_shortly_before_they_may_go(world):
    """A receiver that keeps nothing pulls one message at a time; senders stay close behind."""
    nranks, count = len(world), 8
    produced: dict[tuple[int, int], int] = {}

    def messages(src: int, dst: int):
        for index in range(count):
            produced[(src, dst)] = index + 1
            yield bytes([src, dst]) * 1000

    def body(comm: PeerCommunicator) -> list[tuple[int, int, int]]:
        outgoing = [messages(comm.rank, dst) if dst != comm.rank else [] for dst in range(nranks)]
        seen = []
        for src, index, payload in comm.alltoall_stream(2, outgoing, lambda: 0):
            assert bytes(payload) == bytes([src, comm.rank]) * 1000
            seen.append((src, index, produced[(src, comm.rank)]))
        return seen

    for seen in _on_threads(world, body):
        assert sorted((src, index) for src, index, _ in seen) == [
            (src, i) for src in sorted({s for s, _, _ in seen}) for i in range(count)
        ]
        for _, index, made in seen:
            assert made <= index + 1 + LOOKAHEAD


def test_alltoall_stream_needs_one_list_per_rank(world):
    with pytest.raises(ValueError, match="one message sequence per rank: got 1 for 3 ranks"):
        world[0].alltoall_stream(0, [[b"x"]])


def test_a_consumer_that_fails_stops_every_rank(world):
    """Senders waiting for a grant from a rank that failed raise instead of hanging."""
    nranks = len(world)

    def body(comm: PeerCommunicator) -> str:
        try:
            with comm.query_scope(5) as scoped:
                outgoing = [[b"x" * 1000] * 4 if d != comm.rank else [] for d in range(nranks)]
                for _ in scoped.alltoall_stream(0, outgoing, lambda: 0):
                    if comm.rank == 1:
                        raise RuntimeError("consumer failed")
        except QueryAbortedError as error:
            return f"aborted: {error}"
        except RuntimeError as error:
            return str(error)
        return "finished"

    outcomes = _on_threads(world, body)
    assert outcomes[1] == "consumer failed"
    for rank in (0, 2):
        assert outcomes[rank].startswith("aborted: "), outcomes
        assert "RuntimeError: consumer failed" in outcomes[rank]


def test_messages_of_mixed_sizes_keep_their_order(world):
    """A small message sent after a large one is not delivered before it (UCXX chunks)."""
    nranks = len(world)
    sizes = [3 << 20, 10] * 6

    def body(comm: PeerCommunicator) -> list[tuple[int, int, int, int]]:
        outgoing = [
            [bytes([comm.rank, i]) * (size // 2) for i, size in enumerate(sizes)]
            if dst != comm.rank
            else []
            for dst in range(nranks)
        ]
        return [(s, i, p[0], p[1]) for s, i, p in comm.alltoall_stream(3, outgoing)]

    for got in _on_threads(world, body):
        assert len(got) == (nranks - 1) * len(sizes)
        for src, index, sent_by, sent_as in got:  # the content names what was sent
            assert (sent_by, sent_as) == (src, index)
