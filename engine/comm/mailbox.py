"""Match arriving messages to the ops waiting for them; turn failures into errors, not hangs.

Transports deliver every complete message here (from their own threads); ops wait here (on the
worker's task threads). One condition variable guards it all, so a peer failure, a scope abort
or ``close`` wakes every waiter at once and each raises an error naming its own operation.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from engine.comm.base import CommunicatorError, PeerFailedError, QueryAbortedError
from engine.comm.protocol import Header, Op

__all__ = ["Mailbox", "SendHandle"]

Key = tuple[int, Op, int, int]
"""Matching key of a message: (scope, op, tag, source rank)."""


@dataclass(eq=False)
class SendHandle:
    """Completion of one posted send; a transport marks it through :meth:`Mailbox.complete`."""

    peer: int
    done: bool = False
    error: str | None = None
    keepalive: list[object] = field(default_factory=list)


class Mailbox:
    """Per-communicator message store, keyed by (scope, op, tag, source)."""

    def __init__(self, rank: int) -> None:
        self._rank = rank
        self._cond = threading.Condition()
        self._queues: defaultdict[Key, deque[bytes | memoryview]] = defaultdict(deque)
        self._retired: set[int] = set()
        self._aborted: dict[int, tuple[int, str]] = {}
        self._failed: tuple[int, str] | None = None
        self._closed = False

    def deliver(self, src: int, header: Header, payload: bytes | memoryview) -> None:
        """Store one complete message from ``src`` (called by transport threads)."""
        with self._cond:
            if header.op is Op.ABORT:
                reason = bytes(payload).decode(errors="replace")
                self._aborted.setdefault(header.scope, (src, reason))
            elif header.scope not in self._retired:
                self._queues[(header.scope, header.op, header.tag, src)].append(payload)
            self._cond.notify_all()

    def complete(self, handle: SendHandle, error: str | None = None) -> None:
        """Mark a posted send finished (``error`` set: it failed)."""
        with self._cond:
            handle.done, handle.error = True, error
            handle.keepalive.clear()
            self._cond.notify_all()

    def fail_peer(self, peer: int, reason: str) -> None:
        """Record that ``peer`` is gone: every pending and later op raises ``PeerFailedError``."""
        with self._cond:
            if self._failed is None and not self._closed:
                self._failed = (peer, reason)
            self._cond.notify_all()

    @property
    def failure(self) -> tuple[int, str] | None:
        """The first failed peer and why, or ``None``."""
        return self._failed

    def close(self) -> None:
        """Wake every waiter with an error; drop stored messages."""
        with self._cond:
            self._closed = True
            self._queues.clear()
            self._cond.notify_all()

    def is_retired(self, scope: int) -> bool:
        """Whether ``scope`` was used and left on this rank (its messages are dropped)."""
        with self._cond:
            return scope in self._retired

    def retire(self, scope: int) -> None:
        """Forget ``scope``: drop its stored messages and every later one."""
        with self._cond:
            self._retired.add(scope)
            for key in [key for key in self._queues if key[0] == scope]:
                del self._queues[key]

    def take(self, keys: Iterable[Key], describe: Callable[[], str]) -> list[bytes | memoryview]:
        """Wait for one message under each key and return them in order of ``keys``."""
        wanted = list(keys)
        with self._cond:
            scopes = {key[0] for key in wanted}
            self._cond.wait_for(lambda: self._broken(scopes) or all(map(self._queues.get, wanted)))
            self._raise_if_broken(scopes, describe)
            out = []
            for key in wanted:
                queue = self._queues[key]
                out.append(queue.popleft())
                if not queue:
                    del self._queues[key]
            return out

    def take_any(
        self, keys: Sequence[Key], describe: Callable[[], str]
    ) -> tuple[Key, bytes | memoryview]:
        """Wait until a message is stored under any of ``keys``; take the first such one.

        Keys are tried in the given order, so a caller that lists what it most wants first
        (its data before its control messages, say) gets that whenever it is there.
        """
        scopes = {key[0] for key in keys}
        with self._cond:
            self._cond.wait_for(lambda: self._broken(scopes) or any(map(self._queues.get, keys)))
            self._raise_if_broken(scopes, describe)
            key = next(key for key in keys if self._queues.get(key))
            queue = self._queues[key]
            payload = queue.popleft()
            if not queue:
                del self._queues[key]
            return key, payload

    def queued_bytes(self, scope: int, op: Op) -> int:
        """Bytes of stored, not yet taken messages of ``op`` in ``scope`` (a diagnostic)."""
        with self._cond:
            return sum(
                len(payload)
                for key, queue in self._queues.items()
                if key[0] == scope and key[1] is op
                for payload in queue
            )

    def wait_sent(
        self, scope: int, handles: Iterable[SendHandle], describe: Callable[[], str]
    ) -> None:
        """Wait until every send in ``handles`` finished; raise if one failed."""
        pending = list(handles)
        with self._cond:
            self._cond.wait_for(
                lambda: self._broken({scope}) or all(handle.done for handle in pending)
            )
            self._raise_if_broken({scope}, describe)
            for handle in pending:
                if handle.error is not None:
                    raise PeerFailedError(
                        f"{describe()} failed: sending to rank {handle.peer}: {handle.error}"
                    )

    def check(self, scope: int, describe: Callable[[], str]) -> None:
        """Raise now if an op in ``scope`` could not succeed."""
        with self._cond:
            self._raise_if_broken({scope}, describe)

    def _broken(self, scopes: set[int]) -> bool:
        return self._closed or self._failed is not None or any(s in self._aborted for s in scopes)

    def _raise_if_broken(self, scopes: set[int], describe: Callable[[], str]) -> None:
        if self._closed:
            raise CommunicatorError(
                f"{describe()} failed: the communicator is closed (the engine was shut down; "
                "create a new DaskEngine)"
            )
        if self._failed is not None:
            peer, reason = self._failed
            raise PeerFailedError(f"{describe()} failed: rank {peer} {reason}")
        for scope in scopes:
            if scope in self._aborted:
                peer, reason = self._aborted[scope]
                raise QueryAbortedError(
                    f"{describe()} stopped: rank {peer} left query scope {scope} with an error: "
                    f"{reason}"
                )
