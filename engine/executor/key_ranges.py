"""Each rank's key range and bytes of the frames it is about to exchange, and what they decide.

One small allgather per exchange carries, for every frame a rank holds, its key's smallest and
largest value (when the key is one integer-like column), its bytes, or that it went to pass
files (:class:`engine.executor.grace.Spool`). From that table every rank alike decides whether
to range-partition (and by which splitters), hash, broadcast a side, or exchange in passes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

import polars as pl

from engine.executor.frames import bytes_moved, key_bounds, range_splitters

__all__ = [
    "INELIGIBLE",
    "SPOOLED",
    "RankBounds",
    "any_spooled",
    "choose_splitters",
    "pack_bounds",
    "pack_spooled",
    "sides_bytes",
    "unpack_bounds",
]

INELIGIBLE: Final = "ineligible"
"""A frame whose key is not one integer-like column: it cannot be range-partitioned."""
SPOOLED: Final = "spooled"
"""A frame in pass files: every rank then exchanges in passes."""
_BOUNDS: Final = struct.Struct("<bqqq")


def pack_bounds(values: pl.Series | None, nbytes: int) -> bytes:
    """One frame's key range and bytes for the allgather (no integer key, no values, a range)."""
    if values is None:
        return _BOUNDS.pack(0, 0, 0, nbytes)
    bounds = key_bounds(values)
    return _BOUNDS.pack(1, 0, 0, nbytes) if bounds is None else _BOUNDS.pack(2, *bounds, nbytes)


def pack_spooled(nbytes: int) -> bytes:
    """A spooled frame's entry: its bytes, and that it is in pass files."""
    return _BOUNDS.pack(3, 0, 0, nbytes)


RankBounds = tuple[tuple[int, int] | str | None, int]
"""One frame on one rank: its key range (``None``: no keys; :data:`INELIGIBLE`;
:data:`SPOOLED`), its bytes."""


def unpack_bounds(payload: bytes | memoryview) -> list[RankBounds]:
    """Inverse of :func:`pack_bounds` and :func:`pack_spooled` for each frame in ``payload``.

    >>> unpack_bounds(pack_bounds(pl.Series([3, 1]), 16) + pack_spooled(8))
    [((1, 3), 16), ('spooled', 8)]
    """
    out: list[RankBounds] = []
    for kind, low, high, nbytes in _BOUNDS.iter_unpack(payload):
        bounds = {0: INELIGIBLE, 1: None, 3: SPOOLED}.get(kind, (low, high))
        out.append((bounds, nbytes))
    return out


def any_spooled(gathered: Sequence[Sequence[RankBounds]]) -> bool:
    """Whether some rank's frame went to pass files."""
    return any(bounds is SPOOLED for rank in gathered for bounds, _ in rank)


def sides_bytes(gathered: Sequence[Sequence[RankBounds]]) -> tuple[int, int]:
    """The left and the right frame's bytes summed over the ranks."""
    return sum(rank[0][1] for rank in gathered), sum(rank[1][1] for rank in gathered)


def choose_splitters(
    gathered: Sequence[Sequence[RankBounds]], nframes: int, *, ranges_only: bool
) -> list[int] | None:
    """The key ranges to partition by, or ``None``: hash.

    They are those of the largest frame whose ranks hold ordered ranges, so that it stays in
    place. With ``ranges_only`` the choice must also beat broadcasting the smallest frame, by the
    estimate of :func:`engine.executor.frames.bytes_moved`.
    """
    if any(bounds in (INELIGIBLE, SPOOLED) for rank in gathered for bounds, _ in rank):
        return None
    bounds = [[rank[i][0] for rank in gathered] for i in range(nframes)]
    sizes = [[rank[i][1] for rank in gathered] for i in range(nframes)]
    ordered = [(sum(sizes[i]), range_splitters(bounds[i])) for i in range(nframes)]  # type: ignore[arg-type]
    ordered = [(total, cuts) for total, cuts in ordered if cuts is not None]
    if not ordered:
        return None
    splitters = max(ordered, key=lambda pair: pair[0])[1]
    if ranges_only:
        moved = sum(bytes_moved(bounds[i], sizes[i], splitters) for i in range(nframes))  # type: ignore[arg-type]
        if moved > min(sum(s) for s in sizes) * (len(gathered) - 1):
            return None
    return splitters
