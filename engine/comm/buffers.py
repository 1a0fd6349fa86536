"""Receive buffers: uninitialised, 64-byte aligned, and zero-copy readable by pyarrow.

``bytearray(n)`` would zero every byte first, which costs as much as the copy it receives.
"""

from __future__ import annotations

import pyarrow as pa

__all__ = ["allocate"]

_EMPTY = memoryview(b"")


def allocate(nbytes: int) -> memoryview:
    """A writable byte view of ``nbytes`` fresh bytes (contents undefined).

    >>> view = allocate(3); view[:] = b"abc"; bytes(view)
    b'abc'
    """
    if nbytes == 0:
        return _EMPTY
    return memoryview(pa.allocate_buffer(nbytes)).cast("B")
