"""Stand-in of cudf-polars' ``explain_query``: polars' plan under a marker line."""

from __future__ import annotations

from typing import Any

import polars as pl

from cudf_polars.engine.dask import refusal_of

__all__ = ["explain_query"]


def explain_query(q: pl.LazyFrame, engine: Any, *, physical: bool = True) -> str:
    """The plan, or cudf-polars' refusal."""
    refusal = refusal_of(q)
    if refusal is not None:
        raise refusal
    return "STANDIN PHYSICAL PLAN\n" + q.explain()
