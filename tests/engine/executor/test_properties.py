"""Property tests: random frames and random query chains, planner + rank executor vs polars.

Ranks are threads over a real in-process communicator (see ``conftest.py``), so hypothesis can
try many splits cheaply: empty partitions, more ranks than rows, one group, one partition.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

pytestmark = pytest.mark.timeout(300)

_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def frames(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(0, 30))
    small = st.integers(-3, 3)
    floats = st.sampled_from([0.0, -0.0, 1.5, -2.25, float("nan"), 1e9])
    return pl.DataFrame(
        {
            "i": draw(st.lists(st.none() | small, min_size=n, max_size=n)),
            "f": draw(st.lists(st.none() | floats, min_size=n, max_size=n)),
            "s": draw(st.lists(st.none() | st.sampled_from("abc"), min_size=n, max_size=n)),
            "b": draw(st.lists(st.none() | st.booleans(), min_size=n, max_size=n)),
            "d": draw(
                st.lists(
                    st.none() | st.dates(dt.date(2020, 1, 1), dt.date(2020, 1, 5)),
                    min_size=n,
                    max_size=n,
                )
            ),
            "c": draw(st.lists(st.sampled_from(["x", "y"]), min_size=n, max_size=n)),
        },
        schema={
            "i": pl.Int64,
            "f": pl.Float64,
            "s": pl.String,
            "b": pl.Boolean,
            "d": pl.Date,
            "c": pl.Categorical,
        },
    )


_FILTERS = [
    pl.col("i") > 0,
    pl.col("f").is_nan() | pl.col("f").is_null(),
    pl.col("s").is_in(["a", "b"]),
    pl.col("b"),
    pl.col("d") >= dt.date(2020, 1, 3),
    pl.col("c") == "x",
]
_COLUMNS = [
    (pl.col("i") * 2 + 1).alias("i2"),
    pl.col("s").str.to_uppercase().alias("S"),
    pl.col("d").dt.day().alias("day"),
    pl.when(pl.col("b")).then(pl.col("f")).otherwise(-1.0).alias("fb"),
    pl.col("i").fill_null(0).alias("i"),
]
_KEYS = [["s"], ["c"], ["b", "s"], [pl.col("i") % 2], ["d"], []]
_AGGS = [
    pl.col("f").sum().alias("f_sum"),
    pl.col("i").mean().alias("i_mean"),
    pl.col("i").min().alias("i_min"),
    pl.col("s").max().alias("s_max"),
    pl.len().alias("n"),
    pl.col("f").count().alias("f_count"),
    pl.col("i").n_unique().alias("i_nunique"),
    (pl.col("i").sum() * 2 - pl.len()).alias("combo"),
]


@st.composite
def queries(draw: st.DrawFn) -> tuple[pl.LazyFrame, bool]:
    """A random chain; the flag says whether polars defines the output row order."""
    lf = draw(frames()).lazy()
    ordered = True
    for _ in range(draw(st.integers(0, 3))):
        op = draw(st.sampled_from(["filter", "with_columns", "select"]))
        if op == "filter":
            lf = lf.filter(draw(st.sampled_from(_FILTERS)))
        elif op == "with_columns":
            lf = lf.with_columns(draw(st.sampled_from(_COLUMNS)))
        else:
            lf = lf.select("i", "f", "s", "b", "d", "c")
    if draw(st.booleans()):
        keys = draw(st.sampled_from(_KEYS))
        aggs = draw(st.lists(st.sampled_from(_AGGS), min_size=1, max_size=3, unique_by=str))
        if not keys:
            aggs = [a for a in aggs if "n_unique" not in str(a)] or [pl.len().alias("n")]
            lf = lf.select(aggs)
        else:
            maintain = draw(st.booleans())
            lf = lf.group_by(keys, maintain_order=maintain).agg(aggs)
            ordered = maintain
    return lf, ordered


@_SETTINGS
@given(query=queries(), nranks=st.integers(1, 4), rows=st.integers(1, 12))
def test_random_chains_match_polars(on_threads, query, nranks, rows):
    lf, ordered = query
    got = on_threads(lf, nranks, max_rows_per_partition=rows)
    assert_frame_equal(got, lf.collect(), check_row_order=ordered)


@_SETTINGS
@given(frame=frames(), nranks=st.integers(1, 4), rows=st.integers(1, 12))
def test_all_rows_in_one_group(on_threads, frame, nranks, rows):
    lf = frame.lazy().group_by(pl.lit(1).alias("one")).agg(pl.col("f").sum(), pl.col("i").max())
    got = on_threads(lf, nranks, max_rows_per_partition=rows)
    assert_frame_equal(got, lf.collect())


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    left=frames(),
    right=frames(),
    how=st.sampled_from(["inner", "left", "right", "full", "semi", "anti"]),
    key=st.sampled_from(["i", "s", "c"]),
    nulls_equal=st.booleans(),
    limit=st.sampled_from([1, 1 << 30]),
    nranks=st.integers(1, 4),
)
def test_random_joins(on_threads, left, right, how, key, nulls_equal, limit, nranks):
    lf = left.lazy().join(right.lazy(), on=key, how=how, nulls_equal=nulls_equal)
    got = on_threads(lf, nranks, broadcast_limit=limit, max_rows_per_partition=5)
    assert_frame_equal(got, lf.collect(), check_row_order=False)


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    frame=frames(),
    by=st.lists(st.sampled_from(["i", "f", "s", "d"]), min_size=1, max_size=3, unique=True),
    descending=st.booleans(),
    nulls_last=st.booleans(),
    nranks=st.integers(1, 4),
)
def test_random_sorts(on_threads, frame, by, descending, nulls_last, nranks):
    lf = frame.lazy().sort(by, descending=descending, nulls_last=nulls_last, maintain_order=True)
    got = on_threads(lf, nranks, max_rows_per_partition=4)
    assert_frame_equal(got, lf.collect())


@pytest.fixture(scope="module")
def engine_for(dask_client_of_size):
    from engine.dask import DaskEngine

    engines: dict[int, DaskEngine] = {}

    def get(n_workers: int) -> DaskEngine:
        if n_workers not in engines:
            engines[n_workers] = DaskEngine(
                dask_client=dask_client_of_size(n_workers),
                engine_options={"max_rows_per_partition": 7, "fallback_mode": "raise"},
            )
        return engines[n_workers]

    yield get
    for engine in engines.values():
        engine.shutdown()


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(query=queries(), n_workers=st.sampled_from([1, 2, 4]))
def test_random_chains_on_real_workers(engine_for, query, n_workers):
    lf, ordered = query
    got = lf.collect(engine=engine_for(n_workers))
    assert_frame_equal(got, lf.collect(), check_row_order=ordered)
