"""Grace passes: a rank's share of an operation, split into passes that each fit its memory.

polars' join and group-by hash tables live in memory and do not spill: a rank that hands polars
more rows than its memory holds is killed by its nanny. Every row of one key lands in the same
pass, so joining, aggregating, de-duplicating or windowing the passes one at a time gives the
whole answer (a grace hash join, and its twins) while the rank holds one pass at a time
(:func:`in_passes`); a sort takes passes of consecutive key ranges instead
(:func:`in_range_passes`). Before an exchange, a :class:`Spool` splits what a rank sends
alike on every rank, so the ranks can exchange pass by pass. The passes wait as Arrow IPC
files in the worker's spill directory, each read back once and deleted. A pass still over its
share (keys hashed unevenly, or more rows than the first split foresaw) is split again with
other seeds, up to :data:`_MAX_LEVELS` deep; one key's rows can never be split, and run as one.
"""

from __future__ import annotations

import logging
import os
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Final

import polars as pl

from engine.executor.exchange import SpillPolicy
from engine.executor.frames import (
    concat_frames,
    hash_partition,
    range_destinations,
    split_by_destination,
)

__all__ = [
    "EXCHANGE_PASSES",
    "MAX_PASSES",
    "PartSpool",
    "Spool",
    "even_splitters",
    "in_passes",
    "in_range_passes",
    "pass_share",
]

_LOG = logging.getLogger(__name__)

_PASS_SHARE: Final = 2
"""A pass's input is at most the spill budget over this: polars' hash tables took 2-3x their
input (a group-by ``n_unique`` of TPC-H SF10 lineitem's two key columns: 0.96 GiB in, 2.9 GiB
peak), so one pass peaks near 1.5 budgets, 3/8 of the worker's memory limit."""
MAX_PASSES: Final = 128
_FAN_OUT: Final = 16
"""Passes of a stream whose total is not known when it passes the share; a pass that turns
out over its share is split again."""
_MAX_LEVELS: Final = 3
_SAMPLES_PER_PASS: Final = 128
"""Keys sampled per range pass of a sort: enough that the passes come out near even."""
EXCHANGE_PASSES: Final = _FAN_OUT
"""Passes a :class:`Spool` splits into: fixed, as every rank must split alike before they
know each other's sizes."""
_EXCHANGE_SALT: Final = 100
"""Unlike the rank hash (salt 0) and the passes after an exchange (salts 1 to 3), so each
splits the rows another has put together."""


def pass_share(policy: SpillPolicy) -> int:
    """The most bytes one pass may hold under ``policy`` (at least 1)."""
    return max((policy.budget_bytes or 0) // _PASS_SHARE, 1)


def in_passes(
    sides: Sequence[Iterable[pl.DataFrame]],
    keys: Sequence[Sequence[pl.Expr]],
    policy: SpillPolicy,
    level: int = 0,
) -> Iterator[list[pl.DataFrame]]:
    """Each side's rows, one pass at a time: one frame per side, every key in one pass.

    ``sides`` holds each side's frames (a join has two, an aggregation one): lists, which are
    emptied, or iterators, read one frame at a time. A frame is dropped once written to its
    passes, so the caller must not keep others alive. ``keys`` are each side's key
    expressions (alike for all sides: the same key hashes alike). While the sides fit the pass
    share of ``policy``'s budget, or when nothing may spill or a side has no keys, they stay
    in memory and make one pass. Past the share, the passes are as many as the lists' total
    needs, or :data:`_FAN_OUT` when an iterator's total is unknown.
    """
    share = pass_share(policy)
    splittable = policy.bounded and all(keys) and level < _MAX_LEVELS
    known = sum(f.estimated_size() for side in sides for f in side) if _all_lists(sides) else None
    held: list[list[pl.DataFrame]] = [[] for _ in sides]
    files: list[_PassFiles] = []
    total = 0
    try:
        for index, side in enumerate(sides):
            for frame in _drained(side):
                total += frame.estimated_size()
                if not files and splittable and total > share:
                    count = _FAN_OUT if known is None else -(-known // share)
                    files = _split_held(held, keys, policy, min(MAX_PASSES, max(2, count)), level)
                if files:
                    files[index].add(frame, keys[index], share)
                else:
                    held[index].append(frame)
                del frame
        if not files:
            yield [concat_frames(frames) for frames in held]
            return
        _LOG.debug("%d bytes over a pass share of %d: %d passes", total, share, files[0].count)
        policy.spilled_bytes += total
        for index in range(files[0].count):
            yield from in_passes([[f.take(index)] for f in files], keys, policy, level + 1)
    finally:
        for side_files in files:
            side_files.remove()


def _all_lists(sides: Sequence[Iterable[pl.DataFrame]]) -> bool:
    return all(isinstance(side, list) for side in sides)


def _drained(side: Iterable[pl.DataFrame]) -> Iterator[pl.DataFrame]:
    """The frames of ``side``; a list is emptied as it goes, so its frames can be freed."""
    if isinstance(side, list):
        while side:
            yield side.pop(0)
    else:
        yield from side


def _split_held(
    held: list[list[pl.DataFrame]],
    keys: Sequence[Sequence[pl.Expr]],
    policy: SpillPolicy,
    count: int,
    level: int,
) -> list[_PassFiles]:
    """Pass files for every side, the frames held so far written to them (and dropped)."""
    assert policy.directory is not None
    share = pass_share(policy)
    files = [_PassFiles(policy.directory, count, salt=level + 1) for _ in held]
    for side_files, frames, side_keys in zip(files, held, keys, strict=True):
        while frames:
            side_files.add(frames.pop(0), side_keys, share)
    return files


def in_range_passes(
    frames: Iterable[pl.DataFrame],
    by: Sequence[pl.Expr],
    order: Mapping[str, list[bool]],
    policy: SpillPolicy,
    splitters: pl.DataFrame | None = None,
) -> Iterator[pl.DataFrame]:
    """A rank's rows to sort, in passes of consecutive key ranges, first range first.

    The sort twin of :func:`in_passes`: sorting each pass and concatenating them in order is
    sorting the whole. The passes are cut at ``splitters`` (keys named as ``by`` names them;
    ``order``: ``descending`` and ``nulls_last`` lists as in ``DataFrame.sort``), or, for a
    list of frames, at a sample of their keys. Equal keys land in one pass, in their order,
    so a stable sort stays stable. ``frames`` (a list, emptied, or a stream) stay in memory,
    one pass, while they fit the pass share of ``policy``'s budget.
    """
    share = pass_share(policy)
    if splitters is None:
        assert isinstance(frames, list), "a stream of frames needs its splitters"
        total = sum(frame.estimated_size() for frame in frames)
        if not policy.bounded or total <= share:
            yield concat_frames(frames)
            frames.clear()
            return
        splitters = _sampled_splitters(frames, by, order, min(MAX_PASSES, -(-total // share)))
    cuts = splitters

    def split(rows: pl.DataFrame) -> list[pl.DataFrame]:
        destinations = range_destinations(rows.select(by), cuts, **order)
        return split_by_destination(rows, destinations, cuts.height + 1)

    held: list[pl.DataFrame] = []
    files: _PassFiles | None = None
    total = 0
    try:
        for frame in _drained(frames):
            total += frame.estimated_size()
            if files is None and policy.bounded and total > share and cuts.height:
                assert policy.directory is not None
                files = _PassFiles(policy.directory, cuts.height + 1, salt=0)
                while held:
                    files.add_split(held.pop(0), split, share)
            if files is None:
                held.append(frame)
            else:
                files.add_split(frame, split, share)
            del frame
        if files is None:
            yield concat_frames(held)
            return
        policy.spilled_bytes += total
        for index in range(files.count):
            yield files.take(index)
    finally:
        if files is not None:
            files.remove()


def _sampled_splitters(
    frames: Sequence[pl.DataFrame],
    by: Sequence[pl.Expr],
    order: Mapping[str, list[bool]],
    count: int,
) -> pl.DataFrame:
    """Keys that cut ``frames``' rows into ``count`` ranges of about equal rows."""
    rows = sum(frame.height for frame in frames)
    step = max(1, rows // (count * _SAMPLES_PER_PASS))
    sample = concat_frames([frame.select(by).gather_every(step) for frame in frames])
    return even_splitters(sample.sort(sample.columns, maintain_order=True, **order), count)


def even_splitters(sorted_keys: pl.DataFrame, count: int) -> pl.DataFrame:
    """``count - 1`` rows of ``sorted_keys`` that cut it into ``count`` ranges of equal rows.

    >>> even_splitters(pl.DataFrame({"k": range(10)}), 3)["k"].to_list()
    [3, 6]
    """
    if count <= 1 or not sorted_keys.height:
        return sorted_keys.clear()
    return sorted_keys[[sorted_keys.height * i // count for i in range(1, count)]]


class PartSpool:
    """A rank's frames before a sort's exchange: in memory while they fit, else on disk.

    A sort cannot split what it sends until the ranks agree on splitters, which needs every
    rank's sample first: past the pass share (or ``share``) each frame is written whole, as it
    comes, and read back one at a time, in order (:meth:`parts`), for the exchange rounds.
    """

    def __init__(self, policy: SpillPolicy, share: int | None = None) -> None:
        self._policy = policy
        self._share = pass_share(policy) if share is None else max(share, 1)
        self._held: list[pl.DataFrame] = []
        self._paths: list[str] = []
        self._cleanup = weakref.finalize(self, _unlink_all, [self._paths])
        self.nbytes = 0
        self.nparts = 0
        self.schema: pl.Schema | None = None

    @property
    def spooled(self) -> bool:
        """Whether the frames went to disk (they did not fit the pass share)."""
        return bool(self._paths)

    def add(self, frame: pl.DataFrame) -> None:
        """Hold ``frame``, or write it (and all held) to disk once over the pass share."""
        self.nbytes += frame.estimated_size()
        self.nparts += 1
        if self.schema is None:
            self.schema = frame.schema
        if self._policy.bounded and (self._paths or self.nbytes > self._share):
            self._policy.spilled_bytes += sum(f.estimated_size() for f in self._held)
            self._policy.spilled_bytes += frame.estimated_size()
            for held in [*self._held, frame]:
                self._write(held)
            self._held.clear()
        else:
            self._held.append(frame)

    def _write(self, frame: pl.DataFrame) -> None:
        assert self._policy.directory is not None
        os.makedirs(self._policy.directory, exist_ok=True)
        name = f"polars-hpc-part-{uuid.uuid4().hex}.arrow"
        self._paths.append(os.path.join(self._policy.directory, name))
        frame.write_ipc(self._paths[-1], compression="uncompressed")

    def frame(self) -> pl.DataFrame:
        """The frames held in memory, as one (their chunks are not copied)."""
        assert not self._paths, "a spooled sort input is read part by part"
        return concat_frames(self._held, self.schema)

    def parts(self) -> Iterator[pl.DataFrame]:
        """The frames in order, each read back (and deleted) when asked for."""
        while self._held:
            yield self._held.pop(0)
        while self._paths:
            path = self._paths.pop(0)
            frame = pl.read_ipc(path, memory_map=False)
            os.unlink(path)
            yield frame

    def remove(self) -> None:
        """Delete any files left (an exchange that stopped early)."""
        self._cleanup()


class _PassFiles:
    """One side's rows split by key hash into ``count`` passes, as IPC files in ``directory``."""

    def __init__(self, directory: str, count: int, salt: int) -> None:
        os.makedirs(directory, exist_ok=True)
        self._directory, self._salt = directory, salt
        self._paths: list[list[str]] = [[] for _ in range(count)]
        self._schema: pl.Schema | None = None
        # Files of a spool that an error dropped before its exchange go with the object.
        self._cleanup = weakref.finalize(self, _unlink_all, self._paths)

    @property
    def count(self) -> int:
        return len(self._paths)

    def add(self, frame: pl.DataFrame, keys: Sequence[pl.Expr], slice_bytes: int) -> None:
        """Write ``frame``'s rows to their passes by key hash (row order kept within each)."""
        count, salt = self.count, self._salt
        self.add_split(frame, lambda rows: hash_partition(rows, keys, count, salt), slice_bytes)

    def add_split(
        self,
        frame: pl.DataFrame,
        split: Callable[[pl.DataFrame], list[pl.DataFrame]],
        slice_bytes: int,
    ) -> None:
        """Write ``frame``'s rows to the passes ``split`` gives them (one frame per pass).

        It is split ``slice_bytes`` at a time, so that the copy splitting makes stays small.
        """
        if self._schema is None or not self._schema:
            self._schema = frame.schema
        rows = max(1, frame.height * slice_bytes // max(frame.estimated_size(), 1))
        for offset in range(0, frame.height, rows):
            pieces = split(frame.slice(offset, rows))
            for paths, piece in zip(self._paths, pieces, strict=True):
                if piece.height:
                    name = f"polars-hpc-pass-{uuid.uuid4().hex}.arrow"
                    paths.append(os.path.join(self._directory, name))
                    piece.write_ipc(paths[-1], compression="uncompressed")

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
        self._cleanup()


def _unlink_all(paths_by_pass: list[list[str]]) -> None:
    for paths in paths_by_pass:
        for path in paths:
            if os.path.exists(path):
                os.unlink(path)
        paths.clear()


class Spool:
    """One side's frames on a rank before an exchange: in memory while they fit, else in passes.

    Once its frames pass the pass share, a spool writes them (and every later one) into
    :data:`EXCHANGE_PASSES` passes by a hash salted :data:`_EXCHANGE_SALT`, alike on every rank,
    so the ranks can exchange pass by pass: the rows of pass ``p`` on every rank hold all the
    keys of pass ``p``. A rank that did not spool splits its frames alike when another did.
    """

    def __init__(self, policy: SpillPolicy, keys: Sequence[pl.Expr]) -> None:
        self._policy, self._keys = policy, keys
        self._share = pass_share(policy)
        self._held: list[pl.DataFrame] = []
        self._files: _PassFiles | None = None
        self.nbytes = 0

    @property
    def spooled(self) -> bool:
        """Whether the frames went to pass files (they did not fit the pass share)."""
        return self._files is not None

    def add(self, frame: pl.DataFrame) -> None:
        """Hold ``frame``, or write it to its passes once the side is over the pass share."""
        self.nbytes += frame.estimated_size()
        splittable = self._policy.bounded and bool(self._keys)
        if self._files is None and splittable and self.nbytes > self._share:
            assert self._policy.directory is not None
            self._files = _PassFiles(self._policy.directory, EXCHANGE_PASSES, _EXCHANGE_SALT)
            self._policy.spilled_bytes += self.nbytes - frame.estimated_size()
            while self._held:
                self._files.add(self._held.pop(0), self._keys, self._share)
        if self._files is None:
            self._held.append(frame)
        else:
            self._policy.spilled_bytes += frame.estimated_size()
            self._files.add(frame, self._keys, self._share)

    def frame(self) -> pl.DataFrame:
        """The frames held in memory, as one (their chunks are not copied)."""
        assert self._files is None, "a spooled side is read pass by pass"
        return concat_frames(self._held)

    def passes(self) -> Iterator[pl.DataFrame]:
        """The rows of each of the :data:`EXCHANGE_PASSES` passes in turn; the spool is emptied."""
        if self._files is None:
            frame = concat_frames(self._held)
            self._held.clear()
            pieces = (
                hash_partition(frame, self._keys, EXCHANGE_PASSES, _EXCHANGE_SALT)
                if frame.width
                else [frame] * EXCHANGE_PASSES  # no part at all: nothing to split
            )
            del frame
            for index in range(EXCHANGE_PASSES):
                piece, pieces[index] = pieces[index], pieces[index].clear()
                yield piece
            return
        files = self._files
        try:
            for index in range(EXCHANGE_PASSES):
                yield files.take(index)
        finally:
            files.remove()

    def remove(self) -> None:
        """Delete any pass files left (an exchange that stopped early)."""
        if self._files is not None:
            self._files.remove()
