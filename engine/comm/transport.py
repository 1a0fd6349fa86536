"""What the communicator needs from a transport: ordered, reliable messages to each peer.

A transport moves (header, payload) pairs; it knows nothing of tags, scopes or collectives.
Arriving messages go to ``on_message``; a peer whose connection breaks goes to ``on_peer_lost``;
any arriving byte from a peer goes to ``on_activity`` (the heartbeat watchdog reads it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.comm.mailbox import SendHandle
from engine.comm.protocol import Header

__all__ = ["Callbacks", "Transport"]


@dataclass(frozen=True)
class Callbacks:
    """Where a transport reports what arrives and what breaks (called from its threads)."""

    on_message: Callable[[int, Header, bytes | memoryview], None]
    on_peer_lost: Callable[[int, str], None]
    on_activity: Callable[[int], None]
    complete: Callable[[SendHandle, str | None], None]


class Transport(Protocol):
    """One rank's endpoints to all its peers."""

    name: str

    def local_address(self) -> Mapping[str, Any]:
        """What peers need to reach this rank (published through the scheduler)."""
        ...

    def connect(
        self,
        rank: int,
        peers: Sequence[Mapping[str, Any]],
        callbacks: Callbacks,
        timeout_s: float,
    ) -> None:
        """Establish endpoints to every rank in ``peers`` (indexed by rank; own entry ignored)."""
        ...

    def post(self, peer: int, header: Header, payload: memoryview) -> SendHandle:
        """Start sending; ``payload`` must stay unchanged until the handle completes."""
        ...

    def close(self) -> None:
        """Close endpoints and the listener; idempotent, never blocks for long."""
        ...
