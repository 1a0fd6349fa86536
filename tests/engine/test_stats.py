"""``engine.last_query_stats`` on a real LocalCluster: per-stage numbers, skew, table, plot."""

from __future__ import annotations

import importlib.util

import polars as pl
import pytest

from engine.dask import DaskEngine
from engine.executor.client import last_plan
from engine.plan.explain import plan_stages
from engine.stats import QueryStats

pytestmark = pytest.mark.timeout(120)

ROWS = 4000


@pytest.fixture(scope="module")
def engine(dask_client_of_size):
    opts = {"fallback_mode": "silent", "progress": False}
    with DaskEngine(dask_client=dask_client_of_size(2), engine_options=opts) as engine:
        yield engine


def _frame() -> pl.LazyFrame:
    return pl.LazyFrame({"k": [i % 5 for i in range(ROWS)], "v": list(range(ROWS))})


def test_every_stage_has_numbers_from_every_rank(engine):
    query = _frame().filter(pl.col("v") < ROWS // 2).group_by("k").agg(pl.col("v").sum())
    query.collect(engine=engine)
    stats = engine.last_query_stats
    assert isinstance(stats, QueryStats)
    assert [s.stage for s in stats.stages] == list(range(len(plan_stages(last_plan(engine)))))
    assert all(stage.ranks == 2 for stage in stats.stages)
    by_name = {stage.operation.split(" ")[0]: stage for stage in stats.stages}
    assert by_name["FrameSource"].rows_scanned == ROWS
    assert by_name["FrameSource"].bytes_scanned > 0
    assert by_name["RowWise"].rows_out == ROWS // 2
    assert by_name["RowWise"].rows_skew == pytest.approx(2.0)  # rank 1's rows are all filtered
    assert by_name["Aggregate"].bytes_shuffled > 0
    assert by_name["Aggregate"].rows_out == 5
    assert all(s.seconds_max >= s.seconds_mean >= 0 and s.time_skew >= 1 for s in stats.stages)
    assert stats.fallbacks == ()
    assert 0 < sum(s.seconds_max for s in stats.stages) <= stats.seconds * 2 + 0.1


@pytest.mark.parametrize(("order", "moving"), [("descending", 1.0), ("ascending", 0.0)])
def test_bytes_shuffled_is_the_data_that_had_to_cross_ranks(engine, order, moving):
    """A sort moves the rows whose rank changes; the count must match that data, not itself.

    Rank ``r`` gets rows ``[r * n/2, (r+1) * n/2)`` of the frame. Sorted by a key that
    descends, every row belongs on the other rank: all 16 bytes of every row cross (IPC
    framing and the splitter samples add a little). Already ascending, only samples move.
    """
    n = 20_000
    keys = (
        pl.int_range(n, 0, -1, eager=True) if order == "descending" else pl.int_range(n, eager=True)
    )
    frame = pl.DataFrame({"k": keys, "x": pl.int_range(0, n, eager=True).hash(3)})
    frame.lazy().sort("k").collect(engine=engine)
    shuffled, must_move = engine.last_query_stats.bytes_shuffled, moving * frame.estimated_size()
    report = f"{shuffled} bytes shuffled, {must_move:.0f} bytes of rows had to move"
    assert must_move <= shuffled <= must_move * 1.05 + 16 * 1024, report


def test_dict_keys_of_the_earlier_stats_still_read(engine):
    _frame().group_by("k").agg(pl.len()).collect(engine=engine)
    stats = engine.last_query_stats
    assert stats["bytes_shuffled"] == stats.bytes_shuffled > 0
    assert stats["fallbacks"] == 0
    assert stats["seconds"] == stats.seconds
    with pytest.raises(KeyError, match="bytes_shuffled, fallbacks, seconds"):
        stats["rows"]


def test_fallbacks_are_named(engine):
    _frame().with_columns(pl.col("v").cum_sum()).collect(engine=engine)
    stats = engine.last_query_stats
    assert stats["fallbacks"] == len(stats.fallbacks) == 1
    assert "runs on a single rank" in stats.fallbacks[0]
    assert [s.operation for s in stats.stages if s.fallback] == ["SingleRank HStack (FALLBACK)"]


def test_table_lists_every_stage(engine):
    _frame().group_by("k").agg(pl.col("v").max()).sort("k").collect(engine=engine)
    text = str(engine.last_query_stats)
    lines = text.splitlines()
    assert lines[0].startswith("query: ")
    assert "on 2 ranks" in lines[0]
    assert lines[1].split()[:3] == ["stage", "operation", "time"]
    assert [line.split()[1] for line in lines[2:-1]] == ["Sort", "Aggregate", "FrameSource"]
    assert lines[-1] == "fallbacks: none"
    assert engine.last_query_stats.to_dict()["stages"][0]["operation"] == "Sort"


def test_sinks_record_stats_too(engine, tmp_path):
    _frame().filter(pl.col("v") > 5).sink_parquet(tmp_path / "out", engine=engine)
    assert engine.last_query_stats.rows_scanned == ROWS


@pytest.mark.skipif(
    importlib.util.find_spec("matplotlib") is None,
    reason="matplotlib is not installed (pip install matplotlib)",
)
def test_timeline_image(engine, tmp_path):
    _frame().group_by("k").agg(pl.len()).collect(engine=engine)
    written = engine.last_query_stats.plot_timeline(tmp_path / "profile.png")
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
