"""The communicator every transport shares: tags, scopes, collectives, heartbeats.

Collectives are written once over a transport's ordered point-to-point messages: ``alltoall``
posts every send before it waits for any receive, ``allgather`` is an alltoall of one payload,
``barrier`` an allgather of nothing. A heartbeat thread sends a tiny message to every peer
every ``timeout_s / 4`` and declares a peer failed once nothing at all has arrived from it for
``timeout_s``: a rank that computes for an hour before its next collective is not failed (its
heartbeats flow), a killed or frozen one is.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Final

from engine.comm.base import Communicator, CommunicatorError
from engine.comm.mailbox import Mailbox, SendHandle
from engine.comm.protocol import MAX_SCOPE_ID, MAX_TAG, Header, Op
from engine.comm.stream import stream_alltoall
from engine.comm.transport import Callbacks, Transport

__all__ = ["PeerCommunicator", "QueryCommunicator"]

_ENGINE_SCOPE: Final = 0
_MIN_HEARTBEAT_S: Final = 0.05
_MAX_HEARTBEAT_S: Final = 5.0


class _Core:
    """State shared by a communicator and its query scopes."""

    def __init__(self, rank: int, nranks: int, transport: Transport, timeout_s: float) -> None:
        self.rank, self.nranks, self.transport, self.timeout_s = rank, nranks, transport, timeout_s
        self.mailbox = Mailbox(rank)
        self.last_seen = [time.monotonic()] * nranks
        self.stop = threading.Event()
        self.open_scopes: set[int] = set()
        self.lock = threading.Lock()
        self.callbacks = Callbacks(
            on_message=self.on_message,
            on_peer_lost=self.mailbox.fail_peer,
            on_activity=self.saw,
            complete=self.mailbox.complete,
        )
        self.heartbeat = threading.Thread(
            target=self.heartbeat_loop, name=f"polars-hpc-comm-heartbeat-{rank}", daemon=True
        )

    def saw(self, peer: int) -> None:
        self.last_seen[peer] = time.monotonic()

    def on_message(self, src: int, header: Header, payload: bytes | memoryview) -> None:
        self.saw(src)
        if header.op is not Op.HEARTBEAT:
            self.mailbox.deliver(src, header, payload)

    def heartbeat_loop(self) -> None:
        interval_s = min(max(self.timeout_s / 4, _MIN_HEARTBEAT_S), _MAX_HEARTBEAT_S)
        beat = Header(Op.HEARTBEAT, _ENGINE_SCOPE, 0, 0)
        empty = memoryview(b"")
        while not self.stop.wait(interval_s):
            now = time.monotonic()
            for peer in range(self.nranks):
                if peer == self.rank:
                    continue
                silent_s = now - self.last_seen[peer]
                if silent_s > self.timeout_s:
                    self.mailbox.fail_peer(
                        peer,
                        f"stopped answering: nothing, not even a heartbeat, for {silent_s:.1f} s "
                        f"(timeout_s={self.timeout_s:g}, StreamingOptions.comm_timeout_s)",
                    )
                with contextlib.suppress(Exception):
                    self.transport.post(peer, beat, empty)


class _ScopeOps(Communicator):
    """The operations of :class:`engine.comm.base.Communicator`, inside one tag scope."""

    _core: _Core
    _scope: int

    @property
    def rank(self) -> int:
        """This worker's rank, ``0 <= rank < nranks``."""
        return self._core.rank

    @property
    def nranks(self) -> int:
        """Number of ranks."""
        return self._core.nranks

    def send(self, peer: int, tag: int, payload: bytes | memoryview) -> None:
        """Send ``payload`` to ``peer`` under ``tag`` (returns once it may be reused)."""
        self._check_peer(peer)
        describe = self._describer("send", tag, peer=peer)
        view = _as_bytes_view(payload)
        header = Header(Op.P2P, self._scope, _checked_tag(tag), view.nbytes)
        self._core.mailbox.check(self._scope, describe)
        if peer == self.rank:
            self._core.mailbox.deliver(peer, header, bytes(view))
            return
        handle = self._core.transport.post(peer, header, view)
        self._core.mailbox.wait_sent(self._scope, [handle], describe)

    def recv(self, peer: int, tag: int) -> bytes | memoryview:
        """Receive the next payload ``peer`` sent under ``tag``."""
        self._check_peer(peer)
        key = (self._scope, Op.P2P, _checked_tag(tag), peer)
        return self._core.mailbox.take([key], self._describer("recv", tag, peer=peer))[0]

    def alltoall(
        self, tag: int, payloads: Sequence[bytes | memoryview]
    ) -> list[bytes | memoryview]:
        """Send ``payloads[r]`` to rank ``r`` and return what each rank sent here, by rank.

        The entry for this rank is ``payloads[rank]`` itself, not a copy.
        """
        if len(payloads) != self.nranks:
            raise ValueError(
                f"alltoall needs one payload per rank: got {len(payloads)} for {self.nranks} ranks"
            )
        return self._exchange(Op.ALLTOALL, tag, payloads)

    def alltoall_stream(
        self,
        tag: int,
        outgoing: Sequence[Iterable[bytes | memoryview]],
        room: Callable[[], int] | None = None,
    ) -> Iterator[tuple[int, int, bytes | memoryview]]:
        """Flow-controlled all-to-all of message sequences (see :mod:`engine.comm.stream`)."""
        if len(outgoing) != self.nranks:
            raise ValueError(
                f"alltoall_stream needs one message sequence per rank: got {len(outgoing)} for "
                f"{self.nranks} ranks"
            )
        views = [map(_as_bytes_view, chunks) for chunks in outgoing]
        core = self._core
        return stream_alltoall(
            core.mailbox,
            core.transport,
            core.rank,
            core.nranks,
            self._scope,
            _checked_tag(tag),
            views,
            room,
            self._describer("alltoall_stream", tag),
        )

    def allgather(self, tag: int, payload: bytes | memoryview) -> list[bytes | memoryview]:
        """Every rank's ``payload``, by rank."""
        return self._exchange(Op.ALLGATHER, tag, [payload] * self.nranks)

    def barrier(self, tag: int) -> None:
        """Return once every rank has entered the barrier with the same ``tag``."""
        self._exchange(Op.BARRIER, tag, [b""] * self.nranks)

    def query_scope(self, scope_id: int) -> contextlib.AbstractContextManager[Communicator]:
        """Open the tag space of one query (see :meth:`Communicator.query_scope`)."""
        if isinstance(scope_id, bool) or not isinstance(scope_id, int):
            raise TypeError(f"scope_id={scope_id!r} must be an int")
        if not 1 <= scope_id <= MAX_SCOPE_ID:
            raise ValueError(
                f"scope_id={scope_id} must be in 1..{MAX_SCOPE_ID}; "
                "get one per query from CommGroup.new_scope_id()"
            )
        return _scope(self._core, scope_id)

    def _exchange(
        self, op: Op, tag: int, payloads: Sequence[bytes | memoryview]
    ) -> list[bytes | memoryview]:
        describe = self._describer(op.name.lower(), tag)
        checked = _checked_tag(tag)
        core, rank, nranks = self._core, self.rank, self.nranks
        core.mailbox.check(self._scope, describe)
        handles: list[SendHandle] = []
        for step in range(1, nranks):
            peer = (rank + step) % nranks
            view = _as_bytes_view(payloads[peer])
            handles.append(
                core.transport.post(peer, Header(op, self._scope, checked, view.nbytes), view)
            )
        sources = [(rank - step) % nranks for step in range(1, nranks)]
        received = core.mailbox.take([(self._scope, op, checked, src) for src in sources], describe)
        core.mailbox.wait_sent(self._scope, handles, describe)
        out: list[bytes | memoryview] = [b""] * nranks
        out[rank] = payloads[rank]
        for src, payload in zip(sources, received, strict=True):
            out[src] = payload
        return out

    def _check_peer(self, peer: int) -> None:
        if isinstance(peer, bool) or not isinstance(peer, int) or not 0 <= peer < self.nranks:
            raise ValueError(
                f"peer={peer!r} is not a rank of this communicator (0..{self.nranks - 1})"
            )

    def _describer(self, op: str, tag: int, *, peer: int | None = None) -> Callable[[], str]:
        to = "" if peer is None else f", peer={peer}"
        return lambda: f"{op}(tag={tag}{to}) on rank {self.rank} in scope {self._scope}"


class PeerCommunicator(_ScopeOps):
    """A worker's communicator: its endpoints, heartbeats, and the engine scope (scope 0).

    Built by :mod:`engine.comm.bootstrap`; tasks get it with
    :func:`engine.comm.bootstrap.communicator_for`.
    """

    def __init__(self, rank: int, nranks: int, transport: Transport, timeout_s: float) -> None:
        if not 0 <= rank < nranks:
            raise ValueError(f"rank={rank} must be in 0..{nranks - 1}")
        self._core = _Core(rank, nranks, transport, timeout_s)
        self._scope = _ENGINE_SCOPE
        self._closed = False

    @property
    def transport_name(self) -> str:
        """Which transport moves the bytes (``"ucxx"`` or ``"tcp"``)."""
        return self._core.transport.name

    @property
    def timeout_s(self) -> float:
        """Seconds without any sign of life after which a peer counts as failed."""
        return self._core.timeout_s

    def connect(self, peers: Sequence[dict], timeout_s: float) -> None:
        """Open endpoints to every peer and start the heartbeats (bootstrap step 2)."""
        self._core.transport.connect(self.rank, peers, self._core.callbacks, timeout_s)
        now = time.monotonic()
        self._core.last_seen[:] = [now] * self.nranks
        self._core.heartbeat.start()

    def close(self) -> None:
        """Stop heartbeats, wake every waiter with an error, close endpoints; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._core.stop.set()
        self._core.mailbox.close()
        self._core.transport.close()
        if self._core.heartbeat.is_alive():
            self._core.heartbeat.join(timeout=5)


class QueryCommunicator(_ScopeOps):
    """The communicator seen inside one query scope; ``close`` retires the scope."""

    def __init__(self, core: _Core, scope: int) -> None:
        self._core, self._scope = core, scope

    def close(self) -> None:
        """Retire this scope: its stored and later messages are dropped."""
        self._core.mailbox.retire(self._scope)


@contextlib.contextmanager
def _scope(core: _Core, scope: int) -> Iterator[Communicator]:
    with core.lock:
        if scope in core.open_scopes or core.mailbox.is_retired(scope):
            state = "is already open" if scope in core.open_scopes else "was already used"
            raise CommunicatorError(
                f"query scope {scope} {state} on rank {core.rank}; "
                "every query needs its own scope id (CommGroup.new_scope_id())"
            )
        core.open_scopes.add(scope)
    query = QueryCommunicator(core, scope)
    try:
        yield query
    except BaseException as error:
        _tell_peers_of_abort(core, scope, error)
        raise
    finally:
        query.close()
        with core.lock:
            core.open_scopes.discard(scope)


def _tell_peers_of_abort(core: _Core, scope: int, error: BaseException) -> None:
    """Best effort: a peer that is gone cannot be told, and its own failure surfaces anyway."""
    reason = memoryview(f"{type(error).__name__}: {error}"[:2000].encode())
    header = Header(Op.ABORT, scope, 0, reason.nbytes)
    for peer in range(core.nranks):
        if peer != core.rank:
            with contextlib.suppress(Exception):
                core.transport.post(peer, header, reason)


def _checked_tag(tag: int) -> int:
    if isinstance(tag, bool) or not isinstance(tag, int) or not 0 <= tag <= MAX_TAG:
        raise ValueError(f"tag={tag!r} must be an int in 0..{MAX_TAG}")
    return tag


def _as_bytes_view(payload: bytes | memoryview) -> memoryview:
    """A flat byte view of any buffer (numpy arrays, pyarrow buffers, ...), without copying."""
    view = memoryview(payload)
    if view.format == "B" and view.ndim == 1:
        return view
    if not view.c_contiguous:
        raise ValueError("payload must be a C-contiguous buffer (bytes, bytearray, memoryview)")
    return view.cast("B")
