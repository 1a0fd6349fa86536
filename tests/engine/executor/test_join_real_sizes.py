"""A join planned as a shuffle is decided again on the real sizes of its sides.

Estimates cannot see through a filter: the side that a filter empties is still planned at its
input's size. Once both sides are materialized, the ranks broadcast a side that turned out
small, or let a small side that may not be broadcast filter the other by its keys, so the big
side never crosses the network. The answers are polars' own; the bytes shuffled show which
way the join went.
"""

from __future__ import annotations

import polars as pl
import pytest

from engine.dask import DaskEngine

pytestmark = pytest.mark.timeout(120)

ROWS = 40_000


@pytest.fixture(scope="module")
def engine(dask_client_of_size):
    options = {"fallback_mode": "raise", "broadcast_limit": 64 * 1024}
    with DaskEngine(dask_client=dask_client_of_size(2), engine_options=options) as engine:
        yield engine


@pytest.fixture(scope="module")
def facts() -> pl.DataFrame:
    return pl.DataFrame({"k": range(ROWS), "v": range(ROWS)}).with_columns(
        pl.col("k") % 5000, text=pl.lit("x" * 40)
    )


def _planned_shuffle_moved(engine: DaskEngine, query: pl.LazyFrame, bytes_shuffled_by) -> int:
    """The bytes a join planned as a shuffle moved, its answer checked."""
    assert "shuffle" in engine.explain(query)
    return bytes_shuffled_by(engine, query)


def test_a_side_filtered_small_is_broadcast(engine, facts, bytes_shuffled_by):
    few = facts.lazy().filter(pl.col("v") < 20).select("k", w="v")
    query = facts.lazy().join(few, on="k")
    assert _planned_shuffle_moved(engine, query, bytes_shuffled_by) < facts.estimated_size() // 20


def test_a_small_side_that_may_not_be_broadcast_filters_the_other(engine, facts, bytes_shuffled_by):
    """A semi join keeps its left rows where they are; the big right side moves only its
    rows whose keys the left has."""
    few = facts.lazy().filter(pl.col("v") < 20)
    query = few.join(facts.lazy().select("k", "text"), on="k", how="semi")
    assert _planned_shuffle_moved(engine, query, bytes_shuffled_by) < facts.estimated_size() // 20


def test_sides_that_stay_large_are_shuffled(engine, facts, bytes_shuffled_by):
    query = facts.lazy().join(facts.lazy().select("k", w="v"), on="k", how="left")
    assert (
        _planned_shuffle_moved(engine, query, bytes_shuffled_by)
        > facts.select("k", "v").estimated_size() // 4
    )


def test_a_broadcast_join_sends_the_smaller_side_when_the_streamed_one_is_in_memory(
    dask_client_of_size, facts, bytes_shuffled_by
):
    """The planner sizes a join of joins as the sum of its inputs; the ranks see better.

    ``described`` (planned as the small side: under the limit, smaller than the estimate of the
    join below, and above a MiB, so worth checking) is larger than the few joined rows, which
    are broadcast instead.
    """
    keys = pl.LazyFrame({"k": range(5000), "kind": [i % 3 for i in range(5000)]})
    described = pl.DataFrame({"k": range(100_000), "about": ["y" * 8] * 100_000})
    # Unsorted keys: range-partitioning both sides would not move less.
    described = described.with_columns((pl.col("k") * 7919) % 100_000)
    few = facts.lazy().filter(pl.col("v") < 40).join(keys, on="k")
    query = few.join(described.lazy(), on="k")
    options = {"fallback_mode": "raise", "broadcast_limit": 8 << 20}
    with DaskEngine(dask_client=dask_client_of_size(2), engine_options=options) as engine:
        assert "allgather the right side" in engine.explain(query)
        assert bytes_shuffled_by(engine, query) < described.estimated_size() // 10
