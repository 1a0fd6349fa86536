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
    """The query's result: the ranks' parts in rank order, with the planned schema."""
    frames = [part for part in parts if part.width or part.height]
    result = concat_frames(frames, plan.output_schema)
    if plan.output_schema is not None and result.schema != plan.output_schema:
        result = result.cast(dict(plan.output_schema))
    return result
