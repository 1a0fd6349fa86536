"""Grace passes: a rank's share of a join or aggregation, split by key hash into passes that fit.

polars' join and group-by hash tables live in memory and do not spill: a rank that hands polars
more rows than its memory holds is killed by its nanny. Every row of one key lands in the same
pass, so joining or aggregating the passes one at a time gives the whole answer (a grace hash
join, and its group-by twin) while the rank holds one pass at a time. The passes wait as Arrow
IPC files in the worker's spill directory, each read back once and deleted. A pass still over
its share (keys hashed unevenly, or more rows than the first split foresaw) is split again with
other seeds, up to :data:`_MAX_LEVELS` deep; one key's rows can never be split, and run as one.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from typing import Final

import polars as pl

from engine.executor.exchange import SpillPolicy
from engine.executor.frames import concat_frames, hash_partition

__all__ = ["in_passes"]

_LOG = logging.getLogger(__name__)

_PASS_SHARE: Final = 2
"""A pass's input is at most the spill budget over this: polars' hash tables took 2-3x their
input (a group-by ``n_unique`` of TPC-H SF10 lineitem's two key columns: 0.96 GiB in, 2.9 GiB
peak), so one pass peaks near 1.5 budgets, 3/8 of the worker's memory limit."""
_MAX_PASSES: Final = 128
_MAX_LEVELS: Final = 3


def in_passes(
    sides: list[list[pl.DataFrame]],
    keys: Sequence[Sequence[pl.Expr]],
    policy: SpillPolicy,
    level: int = 0,
) -> Iterator[list[pl.DataFrame]]:
    """Each side's rows, one pass at a time: one frame per side, every key in one pass.

    ``sides`` holds each side's frames (a join has two, an aggregation one) and is emptied:
    a frame is dropped once written to its passes, so the caller must not keep others alive.
    ``keys`` are each side's key expressions (alike for all sides: the same key hashes alike).
    When the sides fit the pass share of ``policy``'s budget, or nothing may spill, or a side
    has no keys, there is one pass of everything and nothing is written.
    """
    total = sum(frame.estimated_size() for side in sides for frame in side)
    share = (policy.budget_bytes or 0) // _PASS_SHARE
    keyless = any(not side_keys for side_keys in keys)
    if not policy.bounded or total <= share or keyless or level == _MAX_LEVELS:
        yield [concat_frames(side) for side in sides]
        return
    count = min(_MAX_PASSES, max(2, -(-total // max(share, 1))))
    assert policy.directory is not None
    files = [_PassFiles(policy.directory, count, salt=level + 1) for _ in sides]
    _LOG.debug("%d bytes over a pass share of %d: %d passes (level %d)", total, share, count, level)
    try:
        for side_files, side, side_keys in zip(files, sides, keys, strict=True):
            while side:
                side_files.add(side.pop(0), side_keys)
        policy.spilled_bytes += total
        for index in range(count):
            yield from in_passes([[f.take(index)] for f in files], keys, policy, level + 1)
    finally:
        for side_files in files:
            side_files.remove()


class _PassFiles:
    """One side's rows split by key hash into ``count`` passes, as IPC files in ``directory``."""

    def __init__(self, directory: str, count: int, salt: int) -> None:
        os.makedirs(directory, exist_ok=True)
        self._directory, self._salt = directory, salt
        self._paths: list[list[str]] = [[] for _ in range(count)]
        self._schema: pl.Schema | None = None

    def add(self, frame: pl.DataFrame, keys: Sequence[pl.Expr]) -> None:
        """Write ``frame``'s rows to their passes' files (row order kept within each pass)."""
        if self._schema is None or not self._schema:
            self._schema = frame.schema
        if not frame.height:
            return
        pieces = hash_partition(frame, keys, len(self._paths), self._salt)
        for paths, piece in zip(self._paths, pieces, strict=True):
            if piece.height:
                path = os.path.join(self._directory, f"polars-hpc-pass-{uuid.uuid4().hex}.arrow")
                paths.append(path)
                piece.write_ipc(path, compression="uncompressed")

    def take(self, index: int) -> pl.DataFrame:
        """Pass ``index``'s rows, read into memory; its files are deleted."""
        frames = []
        paths, self._paths[index] = self._paths[index], []
        for path in paths:
            frames.append(pl.read_ipc(path, memory_map=False))
            os.unlink(path)
        return concat_frames(frames, self._schema)

    def remove(self) -> None:
        """Delete the files of passes not taken (a consumer that stopped early, or an error)."""
        for paths in self._paths:
            for path in paths:
                if os.path.exists(path):
                    os.unlink(path)
            paths.clear()
