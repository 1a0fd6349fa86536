"""Issue 16 on a real LocalCluster: the documented ``execute`` call, and stats of what was read.

- Item 2: ``engine.execute(lf)`` as the user guide shows it raised ``TypeError`` (missing
  ``optimizations``), and ``res.head(3)`` failed because polars' ``QueryResult.head`` is a
  property. Both forms work now: ``res.head`` (a frame) and ``res.head(3)``.
- Item 5: ``last_query_stats`` reported each rank's assigned range: a one-column ``head(5)``
  over 4M rows said 4,000,000 rows and 244 MiB scanned. It reports rows and bytes read.
"""

from __future__ import annotations

import polars as pl
import pytest

from engine.dask import DaskEngine
from engine.executor.results import HeadFrame

pytestmark = pytest.mark.timeout(180)

ROWS = 200_000


@pytest.fixture(scope="module")
def engine(dask_client_of_size):
    opts = {"fallback_mode": "silent", "progress": False}
    with DaskEngine(dask_client=dask_client_of_size(2), engine_options=opts) as engine:
        yield engine


@pytest.fixture(scope="module")
def wide_parquet(tmp_path_factory):
    """Four columns, 40 bytes a row in memory: an int, a float, a 16-byte string, an int."""
    path = tmp_path_factory.mktemp("wide") / "wide.parquet"
    pl.DataFrame(
        {
            "a": range(ROWS),
            "b": [1.5] * ROWS,
            "s": [f"row {i}" for i in range(ROWS)],
            "c": range(ROWS),
        }
    ).write_parquet(path, row_group_size=20_000)
    return path


def test_execute_works_as_the_user_guide_calls_it(engine):
    lf = pl.LazyFrame({"a": list(range(10))}).select(pl.col("a") * 2)
    res = engine.execute(lf)
    assert res.head(3)["a"].to_list() == [0, 2, 4]
    assert isinstance(res.head, pl.DataFrame)
    assert res.head.height == 5
    assert type(res.head.select("a")) is pl.DataFrame  # derived frames are plain
    assert res.head(0).height == 0
    assert res.head(20).height == 10
    assert res.head(-8)["a"].to_list() == [0, 2]
    assert res.n_rows_total == 10
    assert res.lazy().collect()["a"].to_list() == [2 * i for i in range(10)]
    assert lf.execute(engine=engine).head(2)["a"].to_list() == [0, 2]  # polars' own entry
    assert engine.collect(lf).height == 10  # and collect without optimizations, likewise


def test_execute_of_a_query_run_on_the_client_has_the_same_interface(engine):
    res = engine.execute(pl.LazyFrame({"a": [3, 1, 2]}).select(pl.col("a").sort()))
    assert isinstance(res.head, HeadFrame)
    assert res.head(2)["a"].to_list() == [1, 2]
    assert res.n_rows_total == 3


def test_a_one_column_head_reports_the_rows_and_bytes_it_read(engine, wide_parquet):
    result = pl.scan_parquet(wide_parquet).select("a").head(5).collect(engine=engine)
    assert result["a"].to_list() == [0, 1, 2, 3, 4]
    stats = engine.last_query_stats
    # Each of the 2 ranks reads the first 5 rows of its range (rank 0's suffice, but rank 1
    # cannot know), of column ``a`` only: 8 of the row's 40 bytes.
    assert stats.rows_scanned == 10, stats
    scan = next(s for s in stats.stages if s.operation.startswith("ScanSource"))
    assert scan.bytes_scanned == pytest.approx(10 * 8, rel=0.5), stats


def test_a_full_scan_still_reports_every_row_and_the_columns_read(engine, wide_parquet):
    pl.scan_parquet(wide_parquet).select(pl.col("a").sum()).collect(engine=engine)
    stats = engine.last_query_stats
    scan = next(s for s in stats.stages if s.operation.startswith("ScanSource"))
    assert scan.rows_scanned == ROWS
    assert scan.bytes_scanned == pytest.approx(ROWS * 8, rel=0.5)  # one of four columns

    pl.scan_parquet(wide_parquet).collect(engine=engine)
    everything = engine.last_query_stats
    assert everything.rows_scanned == ROWS
    assert everything.stages[0].bytes_scanned > 3 * scan.bytes_scanned


def test_a_sink_counts_the_rows_it_wrote_through(engine, wide_parquet, tmp_path):
    lf = pl.scan_parquet(wide_parquet).filter(pl.col("a") % 2 == 0)
    lf.sink_parquet(tmp_path / "out", engine=engine)
    assert engine.last_query_stats.rows_scanned == ROWS
    assert pl.scan_parquet(tmp_path / "out" / "*.parquet").select(pl.len()).collect().item() == (
        ROWS // 2
    )
