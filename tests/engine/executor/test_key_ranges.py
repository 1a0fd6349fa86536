"""Exchanges over data sorted by its key move almost nothing: ranks keep their key ranges.

Each rank reads a contiguous row range, so a file sorted (or clustered) by a key gives every
rank its own range of keys; partitioned by those ranges instead of by hash, rows stay where
they are. Equal keys at a range boundary, nulls and ranks with no rows must still meet, and
the answers are polars' own.
"""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.dask import DaskEngine

pytestmark = pytest.mark.timeout(300)

ROWS = 200_000


@pytest.fixture(scope="module")
def engine(dask_client_of_size):
    options = {"fallback_mode": "raise", "broadcast_limit": 1024}
    with DaskEngine(dask_client=dask_client_of_size(2), engine_options=options) as engine:
        yield engine


def test_sorted_keys_stay_on_their_rank(engine, bytes_shuffled_by):
    """A group-by that does not decompose (``n_unique``) and a shuffle join, over sorted keys.

    Hashing would send half of each frame to the other rank.
    """
    lines = pl.DataFrame({"order": pl.int_range(ROWS, eager=True) // 4, "supp": range(ROWS)})
    orders = pl.DataFrame({"order": range(ROWS // 4)}).with_columns(day=pl.lit(date(2000, 1, 1)))
    half = lines.estimated_size() // 2
    per_order = lines.lazy().group_by("order").agg(pl.col("supp").n_unique())
    assert bytes_shuffled_by(engine, per_order) < half // 50
    joined = lines.lazy().join(orders.lazy(), on="order")
    assert bytes_shuffled_by(engine, joined) < half // 50


def test_unsorted_keys_are_hashed(engine, bytes_shuffled_by):
    lines = pl.DataFrame(
        {"order": (pl.int_range(ROWS, eager=True) * 7919) % ROWS, "v": range(ROWS)}
    )
    query = lines.lazy().group_by("order").agg(pl.col("v").n_unique())
    assert bytes_shuffled_by(engine, query) > lines.estimated_size() // 8


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    keys=st.lists(st.one_of(st.integers(-3, 40), st.none()), max_size=60),
    other=st.lists(st.one_of(st.integers(-3, 40), st.none()), max_size=60),
    how=st.sampled_from(["inner", "left", "full", "semi", "anti"]),
    nulls_equal=st.booleans(),
)
def test_sorted_keys_with_ties_at_the_boundary_and_nulls_match_polars(
    engine, bytes_shuffled_by, keys, other, how, nulls_equal
):
    """Sorted with nulls first or last, ties across the rank boundary, empty sides."""
    left = pl.DataFrame(
        {"k": sorted(keys, key=lambda v: (v is not None, v or 0))}, schema={"k": pl.Int32}
    )
    left = left.with_columns(a=pl.int_range(pl.len()))
    right = pl.DataFrame(
        {"k": sorted(other, key=lambda v: (v is None, v or 0))}, schema={"k": pl.Int64}
    )
    right = right.with_columns(b=pl.int_range(pl.len()))
    aggregated = left.lazy().group_by("k").agg(pl.col("a").n_unique(), pl.col("a").sum().alias("s"))
    bytes_shuffled_by(engine, aggregated)
    bytes_shuffled_by(
        engine, left.lazy().join(right.lazy(), on="k", how=how, nulls_equal=nulls_equal)
    )
