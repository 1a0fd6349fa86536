"""Small in-memory queries run with polars in the calling process; everything else on the ranks.

``StreamingOptions.client_fast_path_bytes`` (tests/conftest.py turns it off for the rest of the
suite, whose small frames are there to exercise the ranks).
"""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.dask import DaskEngine
from engine.executor.client import CLIENT_FAST_PATH
from engine.options import StreamingOptions

pytestmark = pytest.mark.timeout(120)

FRAME = pl.DataFrame({"k": [1, 2, 1, 3], "v": [10, 20, 30, 40]})
QUERY = FRAME.lazy().group_by("k").agg(pl.col("v").sum()).sort("k")


def _ran_on_client(engine: DaskEngine) -> bool:
    return [stage.operation for stage in engine.last_query_stats.stages] == [CLIENT_FAST_PATH]


@pytest.fixture
def engine(dask_client_of_size):
    options = {"client_fast_path_bytes": 1024, "fallback_mode": "raise"}
    with DaskEngine(dask_client=dask_client_of_size(2), engine_options=options) as engine:
        yield engine


def test_a_small_in_memory_query_runs_in_this_process(engine):
    assert_frame_equal(QUERY.collect(engine=engine), QUERY.collect())
    assert _ran_on_client(engine)
    assert engine.execute(QUERY).head(2)["k"].to_list() == [1, 2]
    assert _ran_on_client(engine)


def test_larger_inputs_and_files_run_on_the_ranks(engine, tmp_path):
    large = pl.LazyFrame({"k": range(1000)}).select(pl.col("k").sum())
    assert large.collect(engine=engine).item() == sum(range(1000))
    assert not _ran_on_client(engine)
    FRAME.write_parquet(tmp_path / "frame.parquet")
    from_file = pl.scan_parquet(tmp_path / "frame.parquet").select(pl.col("v").sum())
    assert from_file.collect(engine=engine).item() == 100
    assert not _ran_on_client(engine)


def test_zero_sends_every_query_to_the_ranks(dask_client_of_size):
    options = {"client_fast_path_bytes": 0}
    with DaskEngine(dask_client=dask_client_of_size(2), engine_options=options) as engine:
        assert_frame_equal(QUERY.collect(engine=engine), QUERY.collect())
        assert not _ran_on_client(engine)


def test_polars_errors_are_polars_own_on_the_fast_path(engine):
    with pytest.raises(pl.exceptions.ColumnNotFoundError):
        FRAME.lazy().select("missing").collect(engine=engine)


def test_a_negative_limit_is_refused_naming_the_option():
    with pytest.raises(ValueError, match="client_fast_path_bytes=-1 must be an integer >= 0"):
        StreamingOptions(client_fast_path_bytes=-1)


def test_frames_above_a_mebibyte_go_straight_to_their_ranks(dask_client_of_size):
    """Above 1 MiB a rank's frames are scattered to its worker, not sent inside the task."""
    frame = pl.DataFrame({"k": [i % 1000 for i in range(300_000)], "v": range(300_000)})
    lf = frame.lazy().group_by("k").agg(pl.col("v").sum()).sort("k")
    with DaskEngine(dask_client=dask_client_of_size(2)) as engine:
        assert_frame_equal(lf.collect(engine=engine), lf.collect())
        assert not _ran_on_client(engine)
