"""The fixed header every transport sends in front of a payload, and the operations it names.

Both transports carry the same header, so matching, scopes, aborts and heartbeats live once in
:mod:`engine.comm.mailbox` and the transports only move bytes in order.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

__all__ = ["HEADER_SIZE", "MAX_SCOPE_ID", "MAX_TAG", "Header", "Op"]

_HEADER: Final = struct.Struct("<B3xIqQI4x")
HEADER_SIZE: Final = _HEADER.size
MAX_TAG: Final = 2**63 - 1
"""User tags are ``0 <= tag <= MAX_TAG``."""
MAX_SCOPE_ID: Final = 2**32 - 1
"""Query scopes are ``1 <= scope_id <= MAX_SCOPE_ID``; scope 0 is the engine's own."""


class Op(IntEnum):
    """What a message is for; part of the matching key so a ``send`` never feeds a collective."""

    P2P = 1
    ALLTOALL = 2
    ALLGATHER = 3
    BARRIER = 4
    ABORT = 5
    HEARTBEAT = 6
    STREAM_META = 7
    STREAM_CREDIT = 8
    STREAM_DATA = 9
    STREAM_EAGER = 10


@dataclass(frozen=True, slots=True)
class Header:
    """One message's header: operation, scope, user tag, payload length, transport sequence."""

    op: Op
    scope: int
    tag: int
    length: int
    seq: int = 0

    def pack(self) -> bytes:
        """The header as the 32 bytes that go on the wire."""
        return _HEADER.pack(self.op, self.scope, self.tag, self.length, self.seq)

    @classmethod
    def unpack(cls, data: bytes | bytearray | memoryview) -> Header:
        """Parse 32 wire bytes.

        >>> Header.unpack(Header(Op.P2P, 7, 3, 10).pack())
        Header(op=<Op.P2P: 1>, scope=7, tag=3, length=10, seq=0)
        """
        op, scope, tag, length, seq = _HEADER.unpack(data)
        return cls(Op(op), scope, tag, length, seq)

    def with_seq(self, seq: int) -> Header:
        """This header carrying the transport's sequence number ``seq``."""
        return Header(self.op, self.scope, self.tag, self.length, seq)
