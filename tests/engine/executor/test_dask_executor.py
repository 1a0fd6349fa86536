"""DaskEngine end to end on real LocalClusters: collect, execute, sinks, explain, fallbacks."""

from __future__ import annotations

import re
import threading
import time
import warnings
from collections.abc import Callable

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from engine.dask import DaskEngine
from engine.executor.client import last_plan
from engine.executor.sinks import SINK_EXTENSIONS
from preload.gpus import nvml_device_count

pytestmark = pytest.mark.timeout(180)

WORKERS = [1, 2, 3]


@pytest.fixture
def engine_of(dask_client_of_size) -> Callable[..., DaskEngine]:
    engines: list[DaskEngine] = []

    def make(n_workers: int, **options) -> DaskEngine:
        engine = DaskEngine(dask_client=dask_client_of_size(n_workers), engine_options=options)
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.shutdown()


@pytest.fixture
def orders(tmp_path) -> pl.LazyFrame:
    frame = pl.DataFrame(
        {
            "customer": [i % 7 for i in range(500)],
            "amount": [float(i % 91) for i in range(500)],
            "tag": [f"t{i % 3}" for i in range(500)],
        }
    )
    frame.head(200).write_parquet(tmp_path / "a.parquet")
    frame.tail(300).write_parquet(tmp_path / "b.parquet", row_group_size=50)
    return pl.scan_parquet(tmp_path / "*.parquet")


@pytest.mark.parametrize("n_workers", WORKERS)
def test_collect_keeps_polars_order_with_zero_fallbacks(engine_of, orders, n_workers):
    engine = engine_of(n_workers, max_rows_per_partition=64)
    lf = orders.filter(pl.col("amount") > 10).with_columns(double=pl.col("amount") * 2)
    assert_frame_equal(lf.collect(engine=engine), lf.collect())
    assert last_plan(engine).fallbacks == ()


@pytest.mark.parametrize("n_workers", WORKERS)
def test_group_by_join_sort(engine_of, orders, n_workers):
    engine = engine_of(n_workers, max_rows_per_partition=64, broadcast_limit=1)
    names = pl.LazyFrame({"customer": list(range(7)), "name": [f"c{i}" for i in range(7)]})
    lf = (
        orders.group_by("customer")
        .agg(pl.col("amount").sum(), pl.len())
        .join(names, on="customer")
        .sort("amount", descending=True)
    )
    assert_frame_equal(lf.collect(engine=engine), lf.collect())
    assert last_plan(engine).fallbacks == ()


@pytest.mark.parametrize("n_workers", WORKERS)
def test_execute_keeps_parts_on_workers(engine_of, orders, n_workers):
    engine = engine_of(n_workers, max_rows_per_partition=64)
    lf = orders.filter(pl.col("tag") == "t1")
    result = (
        lf.execute(engine=engine)
        if hasattr(lf, "execute")
        else engine.execute(lf, optimizations=pl.QueryOptFlags())
    )
    expected = lf.collect()
    assert result.n_rows_total == expected.height
    assert_frame_equal(result.head, expected.head(5))
    assert_frame_equal(result.lazy().collect(), expected)


@pytest.mark.parametrize("file_format", ["parquet", "ipc", "csv", "ndjson"])
def test_sinks_write_one_part_per_rank_partition(engine_of, orders, tmp_path, file_format):
    """Files ``part.<rank>.<i>``: as many per rank as the rank's root stage yielded partitions.

    No part holds more than ``max_rows_per_partition`` rows, so 500 rows need at least 5 parts
    whatever the engine counts; both ranks write. (No partition is empty here: an empty one
    writes no file.)
    """
    engine = engine_of(2, max_rows_per_partition=100)
    target = tmp_path / f"out_{file_format}"
    lf = orders.filter(pl.col("amount") >= 0)
    getattr(lf, f"sink_{file_format}")(target, engine=engine)
    parts = sorted(p.name for p in target.iterdir())
    records = engine.last_query_stats.records
    per_rank = {r["rank"]: r["parts"] for r in records if r["stage"] == 0}
    assert set(per_rank) == {0, 1}, records  # both ranks ran the root stage
    extension = SINK_EXTENSIONS[file_format]
    expected = [f"part.{rank}.{i}.{extension}" for rank in (0, 1) for i in range(per_rank[rank])]
    assert parts == sorted(expected), per_rank
    read = {"parquet": pl.read_parquet, "ipc": pl.read_ipc, "csv": pl.read_csv}.get(
        file_format, pl.read_ndjson
    )
    ordered = sorted(parts, key=lambda name: tuple(int(x) for x in name.split(".")[1:3]))
    frames = [read(target / name) for name in ordered]
    assert all(frame.height <= 100 for frame in frames), [f.height for f in frames]
    assert len(frames) >= 5
    assert_frame_equal(
        pl.concat(frames), lf.collect(), check_dtypes=file_format in ("parquet", "ipc")
    )


def test_sink_refuses_non_empty_directory_unless_overwrite(engine_of, orders, tmp_path):
    engine = engine_of(1)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        orders.sink_parquet(tmp_path / "out", engine=engine)
    orders.sink_parquet(tmp_path / "out", engine=engine, storage_options={"overwrite": True})
    assert not (tmp_path / "out" / "old.txt").exists()
    assert_frame_equal(pl.read_parquet(tmp_path / "out"), orders.collect())


def test_explain_names_stages_exchanges_and_fallbacks(engine_of, orders):
    engine = engine_of(2)
    text = engine.explain(orders.group_by("tag").agg(pl.col("amount").sum()))
    assert "Aggregate (partial+final) <- exchange: hash shuffle on ['tag']" in text
    assert "ScanSource parquet" in text
    assert "fallbacks: none" in text
    text = engine.explain(orders.with_columns(pl.col("amount").cum_sum()))
    assert "SingleRank HStack (FALLBACK)" in text


_BASE = pl.LazyFrame({"t": [1, 2, 3, 4], "a": [4, 1, 3, 1], "k": ["x", "y", "x", "y"]})
FALLBACK_QUERIES = {
    "HStack": _BASE.with_columns(pl.col("a").cum_sum().alias("cum")),
    "Select": _BASE.select(pl.col("a") - pl.col("a").mean()),
    "Filter": _BASE.filter(pl.col("a") > pl.col("a").mean()),
    "Sort": _BASE.sort(pl.col("a").cum_sum()),
    "HConcat": pl.concat([_BASE, _BASE.select(b="a")], how="horizontal", strict=True),
    "Join": _BASE.join_asof(_BASE.select("t", b="a"), on="t"),
    "MapFunction(Unpivot)": _BASE.unpivot(index="k"),
    "GroupBy": _BASE.rolling("t", period="2i").agg(pl.col("a").sum()),
}


@pytest.mark.parametrize("node", sorted(FALLBACK_QUERIES))
def test_fallback_modes(engine_of, node):
    lf = FALLBACK_QUERIES[node]
    expected = lf.collect()
    warn = engine_of(2, fallback_mode="warn")
    with pytest.warns(UserWarning, match=rf"DaskEngine fallback: {re.escape(node)} runs"):
        assert_frame_equal(lf.collect(engine=warn), expected)
    raising = engine_of(2, fallback_mode="raise")
    with pytest.raises(NotImplementedError, match=rf"{re.escape(node)} runs on a single rank"):
        lf.collect(engine=raising)
    silent = engine_of(2, fallback_mode="silent")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_frame_equal(lf.collect(engine=silent), expected)
    assert [f.node for f in last_plan(silent).fallbacks] == [node]


def test_unserializable_query_runs_on_the_client(engine_of):
    lock = threading.Lock()
    lf = _BASE.select(pl.col("a").map_elements(lambda x: x + int(lock.locked()), pl.Int64))
    with pytest.warns(UserWarning, match="with polars on the client"):
        got = lf.collect(engine=engine_of(1, fallback_mode="warn"))
    assert_frame_equal(got, lf.collect())
    with pytest.raises(NotImplementedError, match="cannot serialize"):
        lf.collect(engine=engine_of(1, fallback_mode="raise"))


def test_gpu_backend_on_workers_without_gpus_is_refused_naming_them(dask_client_of_size):
    """CPU workers (no CUDA_VISIBLE_DEVICES, no cudf-polars here) cannot run the device backend."""
    from engine.dask import DaskEngine

    client = dask_client_of_size(2)
    with pytest.raises(RuntimeError, match="fragment_engine='gpu' needs every worker") as raised:
        DaskEngine(dask_client=client, engine_options={"fragment_engine": "gpu"})
    for address in client.ncores():
        assert address in str(raised.value)


def test_gpu_backend_runs_where_the_worker_owns_a_gpu(engine_of):
    """Skips without a GPU; with one, a missing cudf-polars is a skip that CI refuses."""
    if nvml_device_count() == 0:
        pytest.skip("no NVIDIA GPU visible through NVML")
    pytest.importorskip("cudf_polars", reason="cudf-polars is not installed: the [gpu] extra")
    engine = engine_of(1, fragment_engine="gpu")
    assert pl.LazyFrame({"a": [1]}).collect(engine=engine).item() == 1


def test_a_failing_rank_fails_the_query_fast_with_its_own_error(engine_of):
    engine = engine_of(2, comm_timeout_s=120)
    lf = pl.LazyFrame({"a": ["1", "2", "3", "x"]}).with_columns(pl.col("a").cast(pl.Int64))
    query = lf.group_by("a").agg(pl.len())
    start = time.monotonic()
    with pytest.raises(pl.exceptions.InvalidOperationError, match="x"):
        query.collect(engine=engine)
    failed_s = time.monotonic() - start
    assert failed_s < 60, f"the query failed after {failed_s:.1f} s (comm_timeout_s=120)"
    ok = pl.LazyFrame({"a": [1, 2]}).group_by("a").agg(pl.len())
    assert_frame_equal(ok.collect(engine=engine), ok.collect(), check_row_order=False)
