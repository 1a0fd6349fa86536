"""Flow-controlled all-to-all of message sequences, produced and received one at a time.

What a memory-bounded shuffle stands on: each rank sends each peer a sequence of messages
(its data cut into chunks, produced lazily) and hands every message it receives to its
consumer as it arrives. The receiver decides when a peer may send, so a rank never receives
more than its consumer said it can hold, and a sender produces a message only shortly before
it may go. Per pair of ranks, for one call:

1. the sender announces the sizes of its next messages, up to :data:`LOOKAHEAD` ahead of what
   it was allowed to send, and finally that there are no more (``STREAM_META``);
2. the receiver grants announced messages (``STREAM_CREDIT``: how many of the sender's messages
   it may have sent so far, a cumulative count);
3. the sender posts granted messages (``STREAM_DATA``), then produces and announces the next.

A receiver grants the next message while the bytes granted and not yet handed to its consumer,
plus that message, fit ``room()`` (what the consumer can still hold); when nothing is
outstanding it grants one message whatever its size, so a consumer that holds nothing more
still receives, one message at a time. Bytes held for the consumer therefore stay within
``room()`` plus one message. With ``room=None`` the receiver grants everything with its first
grant, and senders stream without waiting.

A sequence of one message of at most :data:`EAGER_BYTES` goes at once, unannounced
(``STREAM_EAGER``), as MPI sends small messages eagerly: most shuffles of partial aggregates
are that small, and a grant's round trip would double their latency. A receiver may so hold
up to :data:`EAGER_BYTES` per peer beyond the bound above.

Every grant is consumed by its sender, so the same tag can be used again: a receiver grants
only announced messages that their sender waits to send, and an announced sequence that needs
no such grant (an empty one; any one under ``room=None``) hears exactly once.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final

from engine.comm.mailbox import Key, Mailbox, SendHandle
from engine.comm.protocol import Header, Op
from engine.comm.transport import Transport

__all__ = ["EAGER_BYTES", "LOOKAHEAD", "Room", "stream_alltoall"]

Room = Callable[[], int]
"""How many more received bytes the consumer can hold now (may be zero or negative)."""

LOOKAHEAD: Final = 2
"""Messages a sender produces and announces per peer beyond what it was allowed to send."""
EAGER_BYTES: Final = 64 * 1024
"""A sequence of one message up to this size is sent without waiting for a grant."""
_COUNT: Final = struct.Struct("<Q")
_END: Final = 2**64 - 1
"""In a ``STREAM_META``: no more messages. In a ``STREAM_CREDIT``: send everything."""


def stream_alltoall(
    mailbox: Mailbox,
    transport: Transport,
    rank: int,
    nranks: int,
    scope: int,
    tag: int,
    outgoing: Sequence[Iterable[memoryview]],
    room: Room | None,
    describe: Callable[[], str],
) -> Iterator[tuple[int, int, bytes | memoryview]]:
    """Send the messages of ``outgoing[r]`` to rank ``r``; yield each message received.

    Yields ``(source, index, payload)``: this rank's own messages first, then its peers' in
    the order they arrive (each source's in its own order). Iterate to the end: the exchange
    finishes (and every send completes) only then.
    """
    peers = [(rank + step) % nranks for step in range(1, nranks)]
    handles: list[SendHandle] = []

    def post(peer: int, op: Op, payload: memoryview) -> None:
        handles.append(transport.post(peer, Header(op, scope, tag, payload.nbytes), payload))

    mailbox.check(scope, describe)
    senders = {peer: _Outgoing(iter(outgoing[peer])) for peer in peers}
    for peer, sender in senders.items():
        post(peer, *sender.start())
    for index, view in enumerate(outgoing[rank]):
        yield rank, index, view
    del outgoing

    incoming = _Incoming(peers, room)
    while True:
        for src, count in incoming.grant():
            post(src, Op.STREAM_CREDIT, memoryview(_COUNT.pack(count)))
        wanted: list[Key] = [(scope, Op.STREAM_DATA, tag, src) for src in incoming.arriving()]
        wanted += [(scope, Op.STREAM_EAGER, tag, src) for src in incoming.unheard()]
        wanted += [(scope, Op.STREAM_META, tag, src) for src in incoming.unfinished()]
        wanted += [(scope, Op.STREAM_CREDIT, tag, dst) for dst in peers if senders[dst].waiting()]
        if not wanted:
            break
        (_, op, _, src), payload = mailbox.take_any(wanted, describe)
        if op is Op.STREAM_DATA:
            yield src, incoming.arrived(src), payload
        elif op is Op.STREAM_EAGER:
            incoming.eager(src)
            yield src, 0, payload
        elif op is Op.STREAM_META:
            incoming.announce(src, [size for (size,) in _COUNT.iter_unpack(payload)])
        else:
            senders[src].credit = _COUNT.unpack(payload)[0]
            _send_allowed(senders[src], lambda op, data, dst=src: post(dst, op, data))
    mailbox.wait_sent(scope, handles, describe)


def _send_allowed(sender: _Outgoing, post: Callable[[Op, memoryview], None]) -> None:
    """Post what the peer's grant allows, announcing more as slots free, until it allows no more.

    Under an unlimited grant this streams the whole sequence: each message is announced
    before it is posted, which is the order the receiver needs.
    """
    while True:
        for message in sender.allowed():
            post(Op.STREAM_DATA, message)
        if sender.ended:
            return
        announced = sender.announce()
        if announced.nbytes:
            post(Op.STREAM_META, announced)
        if not sender.may_post():
            return


class _Outgoing:
    """The send side towards one peer: messages produced, announced, allowed, posted."""

    def __init__(self, messages: Iterator[memoryview]) -> None:
        self._messages = messages
        self._ready: deque[memoryview] = deque()
        self._announced = self._posted = 0
        self.credit: int | None = None
        """The peer's latest grant: how many messages may have been posted in all."""
        self.ended = False
        self._eager = False

    def start(self) -> tuple[Op, memoryview]:
        """The first message to post: the whole sequence if it goes eagerly, else a META.

        It takes two messages, the :data:`LOOKAHEAD`, to know whether there is only one.
        """
        first = next(self._messages, None)
        second = None if first is None else next(self._messages, None)
        if first is not None and second is None and first.nbytes <= EAGER_BYTES:
            self.ended = self._eager = True
            return Op.STREAM_EAGER, first
        self._ready.extend(m for m in (first, second) if m is not None)
        self._announced = len(self._ready)
        self.ended = second is None
        sizes = [m.nbytes for m in self._ready]
        return Op.STREAM_META, _pack([*sizes, _END] if self.ended else sizes)

    def announce(self) -> memoryview:
        """Produce messages up to the lookahead; their sizes (and the end) as a META payload."""
        sizes = []
        while not self.ended and self._announced - self._posted < LOOKAHEAD:
            message = next(self._messages, None)
            if message is None:
                self.ended = True
                sizes.append(_END)
            else:
                self._ready.append(message)
                self._announced += 1
                sizes.append(message.nbytes)
        return _pack(sizes)

    def waiting(self) -> bool:
        """Whether a grant from the peer is still to come (every grant is taken)."""
        if self._eager:
            return False
        return self._posted < self._announced or (self.ended and self.credit is None)

    def may_post(self) -> bool:
        """Whether the latest grant allows a produced message that is not posted yet."""
        return bool(self._ready) and self._posted < (self.credit or 0)

    def allowed(self) -> Iterator[memoryview]:
        """Messages the peer's latest cumulative grant allows, handed over for good."""
        while self.may_post():
            self._posted += 1
            yield self._ready.popleft()


class _Incoming:
    """The receive side's book: announced sizes, grants, arrivals, bytes outstanding."""

    def __init__(self, peers: list[int], room: Room | None) -> None:
        self._peers, self._room = peers, room
        self._sizes: dict[int, list[int]] = {peer: [] for peer in peers}
        self._ended: set[int] = set()
        self._granted = dict.fromkeys(peers, 0)
        self._received = dict.fromkeys(peers, 0)
        self._told: set[int] = set()
        self._announced: set[int] = set()
        self._outstanding = 0

    def announce(self, src: int, sizes: list[int]) -> None:
        self._announced.add(src)
        if sizes and sizes[-1] == _END:
            self._ended.add(src)
            sizes = sizes[:-1]
        self._sizes[src].extend(sizes)
        if self._room is None:
            self._granted[src] = len(self._sizes[src])

    def eager(self, src: int) -> None:
        """``src`` sent its one message unannounced: it is here, and nothing else comes."""
        self._ended.add(src)
        self._sizes[src].append(0)
        self._granted[src] = self._received[src] = 1

    def unfinished(self) -> list[int]:
        """Sources whose end has not been announced."""
        return [src for src in self._peers if src not in self._ended]

    def unheard(self) -> list[int]:
        """Sources nothing came from yet: only they may send their sequence eagerly.

        Once a source announced, an eager message from it belongs to the next call on this
        tag (the source may be there already), not to this one.
        """
        return [src for src in self._peers if src not in self._ended | self._announced]

    def arriving(self) -> list[int]:
        return [src for src in self._peers if self._received[src] < self._granted[src]]

    def arrived(self, src: int) -> int:
        """Index of the message that just arrived from ``src``."""
        index = self._received[src]
        self._received[src] += 1
        if self._room is not None:
            self._outstanding -= self._sizes[src][index]
        return index

    def grant(self) -> list[tuple[int, int]]:
        """New grants as ``(source, cumulative count)``; every announcing source hears."""
        if self._room is None:
            fresh = self._announced - self._told
            self._told |= fresh
            return [(src, _END) for src in sorted(fresh)]
        free = self._room() - self._outstanding
        changed: dict[int, int] = {}
        for src in self._peers:
            sizes = self._sizes[src]
            while self._granted[src] < len(sizes):
                size = sizes[self._granted[src]]
                if self._outstanding > 0 and size > free:
                    return list(changed.items())
                self._granted[src] += 1
                self._outstanding += size
                free -= size
                changed[src] = self._granted[src]
            if src in self._ended and not sizes and src not in self._told:
                changed[src] = 0
                self._told.add(src)
        return list(changed.items())


def _pack(counts: list[int]) -> memoryview:
    return memoryview(b"".join(map(_COUNT.pack, counts)))
