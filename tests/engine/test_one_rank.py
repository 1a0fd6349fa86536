"""A one-rank engine runs the whole query as one polars query (``WholeQuery``)."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.dask import DaskEngine
from engine.executor.client import last_plan
from engine.plan.nodes import WholeQuery

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def orders_file(tmp_path):
    path = tmp_path / "orders.parquet"
    pl.DataFrame({"id": range(100), "tag": [i % 7 for i in range(100)]}).write_parquet(path)
    return path


@pytest.mark.parametrize("partition_bytes", [None, 1])
def test_frames_and_files_in_one_polars_query_on_the_only_rank(
    dask_client_of_size, orders_file, partition_bytes
):
    """``partition_bytes=1``: the input is above the partition size, so polars streams it."""
    tags = pl.LazyFrame({"tag": range(7), "name": [f"t{i}" for i in range(7)]})
    lf = (
        pl.scan_parquet(orders_file)
        .join(tags, on="tag")
        .filter(pl.col("id") % 3 == 0)
        .group_by("name")
        .agg(pl.len(), pl.col("id").sum())
        .sort("name")
    )
    options = {"fallback_mode": "raise", "target_partition_size": partition_bytes}
    with DaskEngine(dask_client=dask_client_of_size(1), engine_options=options) as engine:
        assert_frame_equal(lf.collect(engine=engine), lf.collect())
        plan = last_plan(engine)
        assert isinstance(plan.root, WholeQuery)
        assert plan.fallbacks == ()
        assert "WholeQuery: one polars query on the only rank" in engine.explain(lf)


def test_an_operation_that_cannot_be_distributed_is_no_fallback_on_one_rank(dask_client_of_size):
    lf = pl.LazyFrame({"a": [3, 1, 2]}).with_columns(pl.col("a").cum_sum().alias("c"))
    options = {"fallback_mode": "raise"}
    with DaskEngine(dask_client=dask_client_of_size(1), engine_options=options) as engine:
        assert_frame_equal(lf.collect(engine=engine), lf.collect())


def test_the_users_optimization_flags_reach_the_rank(dask_client_of_size):
    """Without ``sort_collapse`` the two sorts stay two, and ties keep the first sort's order."""
    flags = pl.QueryOptFlags(sort_collapse=False)
    lf = pl.LazyFrame({"a": [2, 2, 1, 3], "b": ["A", "B", "C", "D"]}).sort(pl.all())
    query = lf.sort(pl.col("a").cum_prod())
    with DaskEngine(dask_client=dask_client_of_size(1)) as engine:
        got = query.collect(engine=engine, optimizations=flags)
    assert_frame_equal(got, query.collect(optimizations=flags))
