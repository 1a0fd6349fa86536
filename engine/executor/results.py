"""Helpers shared by the client and the ranks: input slices, result assembly, query results."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import polars as pl

from engine.executor.frames import concat_frames
from engine.plan.nodes import DistributedPlan
from engine.plan.row_ranges import rank_row_range

__all__ = ["HeadFrame", "InMemoryQueryResult", "concat_result", "rank_frames"]


def rank_frames(plan: DistributedPlan, rank: int, nranks: int) -> list[pl.DataFrame]:
    """Rank ``rank``'s contiguous row range of each in-memory frame of the plan."""
    out = []
    for frame in plan.frames:
        start, end = rank_row_range(frame.height, rank, nranks)
        out.append(frame.slice(start, end - start))
    return out


def concat_result(plan: DistributedPlan, parts: Sequence[pl.DataFrame]) -> pl.DataFrame:
    """The query's result: the ranks' parts in rank order, with the schema polars executes.

    polars' resolved schema (``collect_schema``) can differ from what its execution returns
    (a full join with ``coalesce=True`` reports the left key's dtype and returns the common
    supertype). The parts were computed by polars, so their dtypes win: the first part with
    rows sets the schema, and the planned schema only types a result no rank computed.
    """
    frames = [part for part in parts if part.width or part.height]
    with_rows = [part for part in frames if part.height]
    reference = (with_rows or frames)[0].schema if frames else plan.output_schema
    aligned = [
        part if reference is None or part.schema == reference else part.cast(dict(reference))
        for part in frames
    ]
    return concat_frames(aligned, reference)


class HeadFrame(pl.DataFrame):
    """The first rows of a query result: a ``DataFrame``, and callable for another count.

    polars' ``QueryResult`` protocol makes ``head`` a property (``res.head`` is a frame of the
    first rows), while a user reading "``.head``" writes ``res.head(3)`` as on any frame. Both
    work: ``res.head`` is the first 5 rows, ``res.head(n)`` fetches the first ``n``. Frames
    derived from it (``res.head.select(...)``) are plain ``DataFrame`` objects.

    >>> frame = pl.DataFrame({"a": [1, 2, 3, 4, 5, 6]})
    >>> head = HeadFrame.of(frame.head(5), frame.head)
    >>> head.height, head(2).height, type(head.select("a")).__name__
    (5, 2, 'DataFrame')
    """

    _fetch: Callable[[int], pl.DataFrame]

    @classmethod
    def of(cls, first_rows: pl.DataFrame, fetch: Callable[[int], pl.DataFrame]) -> HeadFrame:
        """``first_rows`` as a frame that calls ``fetch(n)`` when called with ``n``."""
        frame = object.__new__(cls)
        frame._df = first_rows._df
        frame._fetch = fetch
        return frame

    @classmethod
    def _from_pydf(cls, py_df: Any) -> pl.DataFrame:
        """Frames polars derives from this one are plain frames (they have nothing to fetch)."""
        return pl.DataFrame._from_pydf(py_df)

    def __call__(self, n: int = 5) -> pl.DataFrame:
        """The first ``n`` rows of the whole result (all but the last ``-n`` when negative)."""
        return self._fetch(n)


class InMemoryQueryResult:
    """A query result already in this process (it ran on the client): polars' ``QueryResult``.

    Like :class:`engine.executor.dispatch.DistributedQueryResult`, its ``head`` is also
    callable, so code written against either reads the same.
    """

    def __init__(self, frame: pl.DataFrame) -> None:
        self._frame = frame

    @property
    def head(self) -> HeadFrame:
        """The first 5 rows; ``head(n)`` gives the first ``n``."""
        return HeadFrame.of(self._frame.head(5), self._frame.head)

    @property
    def n_rows_total(self) -> int:
        """Rows of the whole result."""
        return self._frame.height

    def lazy(self) -> pl.LazyFrame:
        """The result as a LazyFrame, to continue with polars."""
        return self._frame.lazy()

    def __repr__(self) -> str:
        return f"InMemoryQueryResult(rows={self._frame.height})"
