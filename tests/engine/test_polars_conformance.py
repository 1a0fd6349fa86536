"""Queries polars' own unit tests caught giving wrong answers or errors through DaskEngine.

Each case is the smallest form of one finding of the conformance run (tests/conformance/run.py,
issue 18): the query collected by DaskEngine on 2 ranks must equal polars' answer, or raise
polars' own error type where polars raises. Small inputs on 2 ranks leave one rank's share empty
or tiny, which is where most of these went wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.dask import DaskEngine
from engine.executor.client import last_plan

pytestmark = pytest.mark.timeout(300)

Query = Callable[[], pl.LazyFrame]


@pytest.fixture(scope="module")
def engine(dask_client_of_size) -> Iterator[DaskEngine]:
    with DaskEngine(
        dask_client=dask_client_of_size(2), engine_options={"fallback_mode": "silent"}
    ) as engine:
        yield engine


def _int32_and_int128() -> tuple[pl.LazyFrame, pl.LazyFrame]:
    left = pl.LazyFrame({"k": [1, 2, 3], "a": [1, 2, 3]}, schema={"k": pl.Int32, "a": pl.Int64})
    right = pl.LazyFrame({"k": [2, 3, 4], "b": [5, 6, 7]}).with_columns(pl.col("k").cast(pl.Int128))
    return left, right


SAME_ANSWER: dict[str, tuple[Query, bool]] = {
    # name: (query, whether polars defines the row order)
    "first of one row": (lambda: pl.LazyFrame({"a": [7]}).select(pl.col("a").first()), True),
    "last of one row": (lambda: pl.LazyFrame({"a": [7]}).select(pl.col("a").last()), True),
    "has_nulls is an aggregation": (
        lambda: pl.LazyFrame({"a": [1, None, 3], "b": [1, 2, 3]}).select(pl.all().has_nulls()),
        True,
    ),
    "group_by(True)": (
        lambda: pl.LazyFrame({"a": [1, 2, 3]}).group_by(True).agg(pl.col("a").sum()),
        False,
    ),
    "group_by(lit)": (
        lambda: pl.LazyFrame({"a": [1, 2, 3]}).group_by(pl.lit("x")).agg(pl.col("a").max()),
        False,
    ),
    "group_by(lit, maintain_order) of a non-decomposable aggregation": (
        lambda: (
            pl.LazyFrame({"a": [1, 2, 3]})
            .group_by(pl.lit(42), maintain_order=True)
            .agg(pl.col("a").implode())
        ),
        True,
    ),
    "agg(pl.all().first()) expands to one output per column": (
        lambda: (
            pl.LazyFrame({"g": [1, 1, 2], "a": [5, 4, 3], "b": ["x", "y", "z"]})
            .group_by("g")
            .agg(pl.all().first())
        ),
        False,
    ),
    "sort by a multi-column expression": (
        lambda: pl.LazyFrame({"a": [2, 1, 2, 1], "b": [4, 3, 2, 1]}).sort(pl.col("a", "b")),
        True,
    ),
    "a selector feeding one horizontal output": (
        lambda: pl.LazyFrame({"a": [1, 2, None], "b": [None, 4, None]}).select(
            pl.mean_horizontal(pl.all()).alias("m")
        ),
        True,
    ),
    "list.eval runs per row": (
        lambda: pl.LazyFrame({"a": [[1, 2], [3], []]}).select(
            pl.col("a").list.eval(pl.element() * 2)
        ),
        True,
    ),
    "cumulative_eval needs earlier rows": (
        lambda: pl.LazyFrame({"a": [1, 2, 3, 4]}).select(
            pl.col("a").cumulative_eval(pl.element().sum())
        ),
        True,
    ),
    "set_sorted is a hint": (
        lambda: pl.LazyFrame({"a": [1, 2, 3, 4]}).set_sorted("a").filter(pl.col("a") > 1),
        True,
    ),
    "index_of is the first global position": (
        lambda: (
            pl.LazyFrame({"a": [5, 6, 7, 5, 7, None]})
            .filter(pl.col("a") != 6)
            .select(pl.col("a").index_of(7), missing=pl.col("a").index_of(None), n=pl.len())
        ),
        True,
    ),
    "unique(subset=selector, keep='last', maintain_order=True)": (
        lambda: (
            pl.LazyFrame({"x": ["a", "a"], "y": ["b", "b"], "z": [True, False]})
            .unique(subset=pl.exclude("z"), maintain_order=True, keep="last")
            .filter(pl.col("z"))
        ),
        True,
    ),
    "a filter after a right join on a cast key (polars pushes it into the join)": (
        lambda: (
            pl.LazyFrame({"x": [0, 1], "z": [4, 5]})
            .join(
                pl.LazyFrame({"y": [2, 3]}).cast(pl.Int32), left_on="x", right_on="y", how="right"
            )
            .filter(pl.col("z") >= 6)
        ),
        True,
    ),
    "a right column read by its suffixed name after a cross join": (
        lambda: (
            pl.LazyFrame({"a": [1, 2, 3], "c": [2, 3, 4]})
            .join(pl.LazyFrame({"a": [1, 3, 5], "c": [2, 4, 9], "d": [6, 7, 8]}), how="cross")
            .filter(pl.col("a") < pl.col("c_right"))
            .select("d")
        ),
        False,
    ),
    "gather in an ordered group_by where a rank sees no rows": (
        lambda: (
            pl.LazyFrame({"gid": [0, 0, 1, 1], "x": ["0:0", "0:1", "1:0", "1:1"]})
            .group_by("gid", maintain_order=True)
            .agg(x_at_gid=pl.col("x").gather(pl.col("gid").last()).first())
        ),
        True,
    ),
    "a cross join whose right side only counts rows": (
        lambda: (
            pl.LazyFrame({"x": [0, 1, 2]})
            .join(pl.LazyFrame({"x": [1, 1]}).select(pl.min("x").alias("m")), how="cross")
            .select("x")
        ),
        False,
    ),
    "group_by a literal of no rows is one group, as in polars": (
        lambda: (
            pl.LazyFrame({"n": [1, 2, 3]})
            .filter(pl.lit(False))
            .group_by([1], maintain_order=True)
            .agg(pl.col("n").cumulative_eval(pl.element().last()), s=pl.col("n").sum())
        ),
        True,
    ),
    "a slice under row-wise work: the fallible expression sees only kept rows": (
        lambda: (
            pl.LazyFrame({"val": [[1], [1, 1]], "len": [1, 2]})
            .with_columns(pl.col("val").list.get(1).alias("b"))
            .slice(1, 1)
        ),
        True,
    ),
    "head of a strict cast that fails on later rows": (
        lambda: pl.LazyFrame({"a": ["1", "2", "x"]}).select(pl.col("a").cast(pl.Int64)).head(2),
        True,
    ),
    "full join coalesce takes the supertype": (
        lambda: _int32_and_int128()[0].join(
            _int32_and_int128()[1], on="k", how="full", coalesce=True
        ),
        False,
    ),
    "right join on a cast key": (
        lambda: _int32_and_int128()[0].join(_int32_and_int128()[1], on="k", how="right"),
        False,
    ),
}


@pytest.mark.parametrize("name", SAME_ANSWER)
def test_same_answer_as_polars(engine: DaskEngine, name: str) -> None:
    query, ordered = SAME_ANSWER[name]
    expected = query().collect(engine="in-memory")
    assert_frame_equal(query().collect(engine=engine), expected, check_row_order=ordered)


def test_engine_affinity_routes_collect_to_the_engine(engine: DaskEngine) -> None:
    """``pl.Config.set_engine_affinity(engine)`` used to recurse: the engine's own client-side
    collects came back into the engine."""
    lf = pl.LazyFrame({"a": [1, 2, 3, 4]}).filter(pl.col("a") > 1)
    try:
        pl.Config.set_engine_affinity(engine)
        result = lf.collect()
        routed_plan = last_plan(engine)
    finally:
        pl.Config.set_engine_affinity(None)
    assert_frame_equal(result, pl.DataFrame({"a": [2, 3, 4]}))
    assert routed_plan is not None
    assert routed_plan.root is not None, "the query ran on the client, not on the ranks"


WINDOWS = pl.LazyFrame(
    {
        "t": [1, 2, 3, 4, 5, 6],
        "g": [1, 1, 2, 2, 1, 3],
        "h": [1, 2, 2, 1, 1, 2],
        "v": [1.0, 3.0, 2.0, 5.0, 4.0, 6.0],
    }
)


@pytest.mark.parametrize(
    "query",
    [
        WINDOWS.with_columns(pl.col("v").sum().over("g"), w=pl.col("v").mean().over("h")),
        WINDOWS.select(
            pl.col("v").rank().over("g").alias("r"), pl.col("t").max().over("h").alias("m"), "t"
        ),
        WINDOWS.with_columns(pl.col("v").cum_sum().over("h"), x=pl.col("t") * 2),
    ],
    ids=["with_columns", "select", "same output name"],
)
def test_windows_with_different_keys_are_distributed(engine: DaskEngine, query) -> None:
    """Two ``over()`` key sets in one with_columns used to fall back to one rank."""
    assert_frame_equal(query.collect(engine=engine), query.collect(engine="in-memory"))
    plan = last_plan(engine)
    assert plan is not None
    assert plan.fallbacks == ()


FALLBACK_REASONS = {
    "cum_sum": WINDOWS.select(pl.col("v").cum_sum()),
    "join_asof": WINDOWS.join_asof(WINDOWS, on="t"),
    "join_where": WINDOWS.join_where(WINDOWS, pl.col("t") < pl.col("t_right")),
    "group_by_dynamic": WINDOWS.group_by_dynamic("t", every="2i").agg(pl.col("v").sum()),
    "rolling": WINDOWS.rolling("t", period="2i").agg(pl.col("v").sum()),
    "with_context": WINDOWS.with_context(pl.LazyFrame({"z": [1]})).select("t"),
}


@pytest.mark.parametrize("operation", FALLBACK_REASONS)
def test_fallback_reasons_name_the_operation(engine: DaskEngine, operation: str) -> None:
    query = FALLBACK_REASONS[operation]
    expected = query.collect(engine="in-memory")
    assert_frame_equal(query.collect(engine=engine), expected, check_row_order=False)
    plan = last_plan(engine)
    assert plan is not None
    assert any(operation in f"{f.node}: {f.reason}" for f in plan.fallbacks), plan.fallbacks


def test_polars_environment_of_the_client_reaches_the_ranks(
    engine: DaskEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``POLARS_PUSHDOWN_OPT_MAINTAIN_ERRORS`` set in the client keeps polars' error on ranks."""
    lf = pl.LazyFrame({"a": [1, 999]}).with_columns(marker=pl.lit(1, dtype=pl.Int64))
    query = lf.filter(pl.col("a") == 1, pl.col("a").cast(pl.Int8) == 1)
    assert query.collect(engine=engine).height == 1
    monkeypatch.setenv("POLARS_PUSHDOWN_OPT_MAINTAIN_ERRORS", "1")
    with pytest.raises(pl.exceptions.InvalidOperationError, match="conversion from"):
        query.collect(engine="in-memory")
    with pytest.raises(pl.exceptions.InvalidOperationError, match="conversion from"):
        query.collect(engine=engine)
    monkeypatch.delenv("POLARS_PUSHDOWN_OPT_MAINTAIN_ERRORS")
    assert query.collect(engine=engine).height == 1, "the rank kept the client's old setting"
