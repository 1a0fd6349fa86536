"""The communicator of a one-rank world: every exchange is with itself.

A one-worker engine needs no network; the rank executor still calls its collectives, and they
are answered here in process.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

from engine.comm.base import Communicator, CommunicatorError

__all__ = ["LoopbackCommunicator"]


class LoopbackCommunicator(Communicator):
    """Rank 0 of 1."""

    def __init__(self) -> None:
        self._boxes: defaultdict[int, deque[bytes]] = defaultdict(deque)

    @property
    def rank(self) -> int:
        """Always 0."""
        return 0

    @property
    def nranks(self) -> int:
        """Always 1."""
        return 1

    def send(self, peer: int, tag: int, payload: bytes | memoryview) -> None:
        """Queue ``payload`` for this rank."""
        self._check_peer(peer)
        self._boxes[tag].append(bytes(payload))

    def recv(self, peer: int, tag: int) -> bytes:
        """The oldest payload sent to itself under ``tag``."""
        self._check_peer(peer)
        if not self._boxes[tag]:
            raise CommunicatorError(f"rank 0 of 1: recv(tag={tag}) with nothing sent; deadlock")
        return self._boxes[tag].popleft()

    def alltoall(
        self, tag: int, payloads: Sequence[bytes | memoryview]
    ) -> list[bytes | memoryview]:
        """Its own payload back."""
        if len(payloads) != 1:
            raise CommunicatorError(
                f"alltoall needs 1 payload in a world of 1, got {len(payloads)}"
            )
        return [payloads[0]]

    def allgather(self, tag: int, payload: bytes | memoryview) -> list[bytes | memoryview]:
        """Its own payload back."""
        return [payload]

    def barrier(self, tag: int) -> None:
        """Nothing to wait for."""

    def query_scope(self, scope_id: int) -> AbstractContextManager[Communicator]:
        """A fresh loopback: nothing sent in one scope is seen by another."""
        return nullcontext(LoopbackCommunicator())

    def close(self) -> None:
        """Nothing to close."""

    @staticmethod
    def _check_peer(peer: int) -> None:
        if peer != 0:
            raise CommunicatorError(f"peer {peer} does not exist in a world of 1 rank")
