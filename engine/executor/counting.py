"""A communicator wrapper that counts the bytes a rank sends to other ranks.

The rank executor reports them per query (``bytes_shuffled``), which is how a benchmark or a
test sees that pruning kept columns off the network.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager

from engine.comm.base import Communicator

__all__ = ["CountingCommunicator"]


class CountingCommunicator(Communicator):
    """Forwards every call to ``inner``; ``bytes_sent`` counts payloads sent to other ranks."""

    def __init__(self, inner: Communicator) -> None:
        self.inner = inner
        self.bytes_sent = 0

    @property
    def rank(self) -> int:
        """The wrapped communicator's rank."""
        return self.inner.rank

    @property
    def nranks(self) -> int:
        """The wrapped communicator's number of ranks."""
        return self.inner.nranks

    def send(self, peer: int, tag: int, payload: bytes | memoryview) -> None:
        """Send and count."""
        if peer != self.rank:
            self.bytes_sent += len(payload)
        self.inner.send(peer, tag, payload)

    def recv(self, peer: int, tag: int) -> bytes | memoryview:
        """Receive."""
        return self.inner.recv(peer, tag)

    def alltoall(
        self, tag: int, payloads: Sequence[bytes | memoryview]
    ) -> list[bytes | memoryview]:
        """All-to-all; counts what leaves this rank."""
        self.bytes_sent += sum(len(p) for r, p in enumerate(payloads) if r != self.rank)
        return self.inner.alltoall(tag, payloads)

    def alltoall_stream(
        self,
        tag: int,
        outgoing: Sequence[Iterable[bytes | memoryview]],
        room: Callable[[], int] | None = None,
    ) -> Iterator[tuple[int, int, bytes | memoryview]]:
        """Streaming all-to-all; counts what leaves this rank, as it is produced."""
        counted = [
            chunks if r == self.rank else self._counted(chunks) for r, chunks in enumerate(outgoing)
        ]
        return self.inner.alltoall_stream(tag, counted, room)

    def _counted(self, chunks: Iterable[bytes | memoryview]) -> Iterator[bytes | memoryview]:
        for chunk in chunks:
            self.bytes_sent += memoryview(chunk).nbytes
            yield chunk

    def allgather(self, tag: int, payload: bytes | memoryview) -> list[bytes | memoryview]:
        """All-gather; counts one copy per other rank."""
        self.bytes_sent += len(payload) * (self.nranks - 1)
        return self.inner.allgather(tag, payload)

    def barrier(self, tag: int) -> None:
        """Barrier."""
        self.inner.barrier(tag)

    def query_scope(self, scope_id: int) -> AbstractContextManager[Communicator]:
        """The wrapped communicator's scope (not counted: wrap the scope instead)."""
        return self.inner.query_scope(scope_id)

    def close(self) -> None:
        """Close the wrapped communicator."""
        self.inner.close()
