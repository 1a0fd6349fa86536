"""A subplan that a query uses twice is planned once and computed once per rank.

polars' own optimizer caches common subplans (TPC-H Q11 joins partsupp, supplier and nation
for the groups and again for their total); planned naively, every rank would run that join and
its exchanges twice. Subtrees read for different columns differ after column pruning, and
repeated in-memory frames are separate inputs: neither is shared.
"""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.dask import DaskEngine
from engine.executor.rank import _reads_of
from engine.plan.explain import plan_stages
from engine.plan.nodes import Join
from engine.plan.planner import plan_for_ranks

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def query(tmp_path) -> pl.LazyFrame:
    pl.DataFrame({"k": [i % 50 for i in range(5000)], "v": range(5000)}).write_parquet(
        tmp_path / "facts.parquet"
    )
    pl.DataFrame({"k": range(50), "group": [i % 7 for i in range(50)]}).write_parquet(
        tmp_path / "dims.parquet"
    )
    joined = (
        pl.scan_parquet(tmp_path / "facts.parquet")
        .join(pl.scan_parquet(tmp_path / "dims.parquet"), on="k")
        .select("group", "v")
    )
    totals = joined.select(pl.sum("v").alias("total"), pl.max("group").alias("groups"))
    return joined.group_by("group").agg(pl.sum("v")).join(totals, how="cross")


def test_the_shared_join_is_one_node_read_twice(query):
    plan = plan_for_ranks(query, 2, broadcast_limit=1024)
    joins = [node for node in plan_stages(plan) if isinstance(node, Join) and node.how == "inner"]
    assert len(joins) == 1
    assert _reads_of(plan)[id(joins[0])] == 2


def test_a_shared_subplan_gives_polars_answer_and_runs_once(dask_client_of_size, query):
    options = {"fallback_mode": "raise", "broadcast_limit": 1024}
    with DaskEngine(dask_client=dask_client_of_size(2), engine_options=options) as engine:
        assert_frame_equal(query.collect(engine=engine), query.collect(), check_row_order=False)
        inner = [s for s in engine.last_query_stats.stages if s.operation.startswith("Join inner")]
        assert len(inner) == 1
        assert inner[0].rows_out == 5000  # once per query, not twice
