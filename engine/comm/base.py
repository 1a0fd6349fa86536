"""The communicator interface every transport implements, and the errors it raises.

Plans know nothing of transports and transports know nothing of plans: the rank executor is the
only place the two meet. One communicator lives on each worker per engine; every query opens its
own tag space (:meth:`Communicator.query_scope`) so two queries never read each other's messages.
"""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager

__all__ = ["Communicator", "CommunicatorError", "PeerFailedError", "QueryAbortedError"]


class CommunicatorError(RuntimeError):
    """A collective or point-to-point operation failed; the message names rank and operation."""


class PeerFailedError(CommunicatorError):
    """A peer died or did not answer within the timeout."""


class QueryAbortedError(CommunicatorError):
    """Another rank left this query's tag space with an error, so this rank's pending op stops.

    Raised instead of waiting for the timeout: a query that failed on one rank (a polars error in
    its fragment, say) ends on every rank at once, and the next query starts clean.
    """


class Communicator(ABC):
    """Point-to-point and collective exchange of byte buffers between the ranks of one engine.

    Buffers are ``bytes``-like (``bytes``, ``bytearray``, ``memoryview``); received buffers are
    returned as ``bytes`` or ``memoryview``. Every blocking call raises :class:`PeerFailedError`
    within the communicator's timeout instead of hanging when a peer is gone.
    """

    @property
    @abstractmethod
    def rank(self) -> int:
        """This worker's rank, ``0 <= rank < nranks``."""

    @property
    @abstractmethod
    def nranks(self) -> int:
        """Number of ranks."""

    @abstractmethod
    def send(self, peer: int, tag: int, payload: bytes | memoryview) -> None:
        """Send ``payload`` to ``peer`` under ``tag`` (returns once it may be reused)."""

    @abstractmethod
    def recv(self, peer: int, tag: int) -> bytes | memoryview:
        """Receive the next payload ``peer`` sent under ``tag``."""

    @abstractmethod
    def alltoall(
        self, tag: int, payloads: Sequence[bytes | memoryview]
    ) -> list[bytes | memoryview]:
        """Send ``payloads[r]`` to rank ``r`` and return what each rank sent here, by rank."""

    def alltoall_stream(
        self,
        tag: int,
        outgoing: Sequence[Iterable[bytes | memoryview]],
        room: Callable[[], int] | None = None,
    ) -> Iterator[tuple[int, int, bytes | memoryview]]:
        """Send the messages of ``outgoing[r]`` to rank ``r``; yield each received message.

        Yields ``(source, index, payload)`` as messages arrive (each source's in order, this
        rank's own first); iterate to the end. ``outgoing[r]`` may be a generator: messages
        are taken from it shortly before they may go. ``room`` says how many more received
        bytes the caller can hold right now: a communicator that supports it lets peers send
        only what fits, plus one message when the caller holds all it can (so a
        memory-bounded consumer sees at most one message beyond its limit), see
        :mod:`engine.comm.stream`.

        This default produces and receives everything at once and ignores ``room``: it is
        correct on any communicator, bounded on none. Transports override it.

        Examples
        --------
        >>> for src, index, payload in comm.alltoall_stream(3, chunks):  # doctest: +SKIP
        ...     parts[src].append(payload)
        """
        messages = [list(chunks) for chunks in outgoing]
        counts = self.alltoall(tag, [struct.pack("<Q", len(chunks)) for chunks in messages])
        peers = [(self.rank + step) % self.nranks for step in range(1, self.nranks)]
        for peer in peers:
            for chunk in messages[peer]:
                self.send(peer, tag, chunk)
        for index, chunk in enumerate(messages[self.rank]):
            yield self.rank, index, chunk
        for src in peers:
            (count,) = struct.unpack("<Q", counts[src])
            for index in range(count):
                yield src, index, self.recv(src, tag)

    @abstractmethod
    def allgather(self, tag: int, payload: bytes | memoryview) -> list[bytes | memoryview]:
        """Every rank's ``payload``, by rank."""

    @abstractmethod
    def barrier(self, tag: int) -> None:
        """Return once every rank has entered the barrier with the same ``tag``."""

    @abstractmethod
    def query_scope(self, scope_id: int) -> AbstractContextManager[Communicator]:
        """Open the tag space of one query: a communicator whose messages no other scope sees.

        Every rank enters the scope with the same ``scope_id`` (the client hands one out per
        query, e.g. :meth:`engine.comm.bootstrap.CommGroup.new_scope_id`; ``1 <= scope_id <
        2**32``). Leaving it retires the id: late messages for it are dropped. Leaving it with an
        exception tells every peer, whose pending and later ops in that scope raise
        :class:`QueryAbortedError`. Several scopes may be open at once, from different threads.

        Examples
        --------
        >>> with comm.query_scope(7) as q:  # doctest: +SKIP
        ...     parts = q.alltoall(tag=0, payloads=[b"x"] * q.nranks)
        """

    @abstractmethod
    def close(self) -> None:
        """Close endpoints and listeners; idempotent."""
