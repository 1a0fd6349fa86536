"""Pure helpers shared by the client and the ranks: input slices and result assembly."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from engine.executor.frames import concat_frames
from engine.executor.rank import rank_row_range
from engine.plan.nodes import DistributedPlan

__all__ = ["concat_result", "rank_frames"]


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
