"""The rank executor on 1-4 thread ranks against polars itself."""

from __future__ import annotations

import polars as pl
import pytest
from polars.testing import assert_frame_equal

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def frame() -> pl.DataFrame:
    n = 1000
    return pl.DataFrame(
        {
            "k": [i % 7 for i in range(n)],
            "s": [f"s{i % 5}" if i % 11 else None for i in range(n)],
            "v": [float(i) if i % 13 else None for i in range(n)],
            "i": list(range(n)),
        }
    )


@pytest.mark.parametrize("nranks", [1, 2, 3, 4])
def test_row_wise_keeps_polars_order(on_threads, frame, nranks):
    lf = frame.lazy().filter(pl.col("k") > 2).with_columns(w=pl.col("v") * 2).select("i", "w")
    assert_frame_equal(on_threads(lf, nranks, max_rows_per_partition=97), lf.collect())


@pytest.mark.parametrize("nranks", [1, 2, 4])
def test_group_by_partial(on_threads, frame, nranks):
    lf = (
        frame.lazy()
        .group_by("k", "s")
        .agg(
            pl.col("v").sum(),
            pl.col("v").mean().alias("mean"),
            pl.col("v").min().alias("min"),
            pl.col("i").max().alias("max"),
            pl.len(),
            pl.col("v").count().alias("count"),
            pl.col("i").first().alias("first"),
            pl.col("i").last().alias("last"),
        )
    )
    got = on_threads(lf, nranks, max_rows_per_partition=101)
    assert_frame_equal(got, lf.collect(), check_row_order=False)


@pytest.mark.parametrize("nranks", [1, 3])
def test_group_by_raw_and_maintain_order(on_threads, frame, nranks):
    lf = (
        frame.lazy()
        .group_by(pl.col("k") % 3, maintain_order=True)
        .agg(pl.col("v").median(), pl.col("s").n_unique())
    )
    assert_frame_equal(on_threads(lf, nranks, max_rows_per_partition=50), lf.collect())


@pytest.mark.parametrize("nranks", [1, 2, 4])
def test_global_aggregation(on_threads, frame, nranks):
    lf = frame.lazy().select(pl.col("v").sum(), pl.col("i").mean(), pl.len())
    assert_frame_equal(on_threads(lf, nranks, max_rows_per_partition=64), lf.collect())


@pytest.mark.parametrize("nranks", [2, 4])
def test_more_ranks_than_rows(on_threads, nranks):
    lf = pl.LazyFrame({"a": [1], "b": ["x"]}).group_by("b").agg(pl.col("a").sum())
    assert_frame_equal(on_threads(lf, nranks), lf.collect())


@pytest.mark.parametrize("nranks", [1, 2, 3])
def test_head_and_fallback_sort(on_threads, frame, nranks):
    lf = frame.lazy().sort("v", "i", descending=True).head(17)
    assert_frame_equal(on_threads(lf, nranks, max_rows_per_partition=30), lf.collect())
    tail = frame.lazy().filter(pl.col("k") == 1).tail(5)
    assert_frame_equal(on_threads(tail, nranks, max_rows_per_partition=30), tail.collect())


def test_parquet_scan(on_threads, frame, tmp_path):
    for i in range(3):
        frame.slice(i * 300, 300 + 100 * (i == 2)).write_parquet(tmp_path / f"p{i}.parquet")
    lf = pl.scan_parquet(tmp_path / "*.parquet", row_index_name="ri", include_file_paths="path")
    lf = lf.filter(pl.col("k") != 3).select("ri", "path", "v")
    assert_frame_equal(on_threads(lf, 4, max_rows_per_partition=123), lf.collect())


@pytest.fixture
def dims() -> pl.DataFrame:
    return pl.DataFrame(
        {"k": [0, 1, 2, 3, 5, None, 1], "name": ["a", "b", "c", "d", "f", "n", "b2"]}
    )


@pytest.mark.parametrize("how", ["inner", "left", "right", "full", "semi", "anti", "cross"])
@pytest.mark.parametrize("broadcast_limit", [1, 1 << 30])
def test_joins(on_threads, frame, dims, how, broadcast_limit):
    left = frame.lazy().filter(pl.col("i") < 40)
    on = {} if how == "cross" else {"on": "k"}
    lf = left.join(dims.lazy(), how=how, **on)
    got = on_threads(lf, 3, max_rows_per_partition=7, broadcast_limit=broadcast_limit)
    assert_frame_equal(got, lf.collect(), check_row_order=False)


def test_join_expression_keys_and_dtype_mismatch(on_threads, frame):
    right = pl.LazyFrame({"kk": pl.Series([0, 2, 4], dtype=pl.Int32), "x": [1.0, 2.0, 3.0]})
    lf = frame.lazy().join(right, left_on=pl.col("k") * 2, right_on="kk", how="left", suffix="_r")
    got = on_threads(lf, 2, max_rows_per_partition=100, broadcast_limit=1)
    assert_frame_equal(got, lf.collect(), check_row_order=False)


@pytest.mark.parametrize("nranks", [1, 2, 4])
def test_sort_stable_with_nulls_and_descending(on_threads, frame, nranks):
    lf = frame.lazy().sort(
        ["s", "v"], descending=[True, False], nulls_last=True, maintain_order=True
    )
    assert_frame_equal(on_threads(lf, nranks, max_rows_per_partition=77), lf.collect())


@pytest.mark.parametrize("nranks", [1, 3])
def test_top_k_and_unique_and_row_index(on_threads, frame, nranks):
    top = frame.lazy().top_k(7, by=["k", "i"])
    assert_frame_equal(
        on_threads(top, nranks, max_rows_per_partition=50), top.collect(), check_row_order=False
    )
    uniq = frame.lazy().unique(subset=["k", "s"], keep="first")
    assert_frame_equal(on_threads(uniq, nranks), uniq.collect(), check_row_order=False)
    for keep in ("first", "last", "none"):
        ordered = frame.lazy().unique(subset=["k", "s"], keep=keep, maintain_order=True)
        assert_frame_equal(
            on_threads(ordered, nranks, max_rows_per_partition=40), ordered.collect()
        )
    whole = frame.lazy().select("k", "s").unique(maintain_order=True)
    assert_frame_equal(on_threads(whole, nranks), whole.collect())
    ri = frame.lazy().filter(pl.col("k") > 4).with_row_index("ri", offset=10)
    assert_frame_equal(on_threads(ri, nranks, max_rows_per_partition=33), ri.collect())


@pytest.mark.parametrize("nranks", [1, 2, 4])
def test_over_windows_keep_row_order(on_threads, frame, nranks):
    share = pl.col("v") / pl.col("v").sum().over("k")
    queries = [
        frame.lazy().with_columns(share.alias("share"), rank=pl.col("i").rank().over("k")),
        frame.lazy().select("i", pl.col("v").cum_sum().over("k").alias("run")),
        frame.lazy().filter(pl.col("i") == pl.col("i").max().over("k", "s")),
    ]
    for lf in queries:
        assert_frame_equal(on_threads(lf, nranks, max_rows_per_partition=61), lf.collect())


def _write(frame: pl.DataFrame, path, file_format: str) -> None:
    {
        "parquet": frame.write_parquet,
        "ipc": frame.write_ipc,
        "csv": frame.write_csv,
        "ndjson": frame.write_ndjson,
    }[file_format](path)


_SCANS = {
    "parquet": pl.scan_parquet,
    "ipc": pl.scan_ipc,
    "csv": pl.scan_csv,
    "ndjson": pl.scan_ndjson,
}


@pytest.mark.parametrize("file_format", sorted(_SCANS))
@pytest.mark.parametrize("nranks", [1, 3])
def test_file_scans_with_options(on_threads, frame, tmp_path, file_format, nranks):
    paths = []
    for i in range(2):
        path = tmp_path / f"f{i}.{file_format}"
        _write(frame.slice(i * 400, 400 + 200 * i).select("k", "i"), path, file_format)
        paths.append(path)
    scan = _SCANS[file_format]
    queries = [
        scan(paths, n_rows=555, row_index_name="ri", row_index_offset=3).filter(pl.col("k") > 1),
        scan(tmp_path / f"*.{file_format}", include_file_paths="path").select("path", "i"),
        scan(paths[0]).head(7),
    ]
    for lf in queries:
        assert_frame_equal(on_threads(lf, nranks, max_rows_per_partition=90), lf.collect())


@pytest.mark.parametrize("nranks", [1, 4])
def test_hive_partitions(on_threads, frame, tmp_path, nranks):
    frame.write_parquet(tmp_path / "hive", partition_by=["k"])
    lf = pl.scan_parquet(tmp_path / "hive", hive_partitioning=True).filter(pl.col("k") != 2)
    got = on_threads(lf.group_by("k").agg(pl.col("i").sum()), nranks)
    assert_frame_equal(
        got, lf.group_by("k").agg(pl.col("i").sum()).collect(), check_row_order=False
    )
    assert_frame_equal(on_threads(lf, nranks, max_rows_per_partition=50), lf.collect())


def test_shuffle_spills_past_the_memory_budget_and_finishes(frame, tmp_path, rank_threads):
    import itertools

    from engine.executor.exchange import SpillPolicy
    from engine.executor.rank import PartitionLimits, RankExecutor
    from engine.executor.results import concat_result, rank_frames
    from engine.plan import plan_lazyframe

    lf = frame.lazy().join(frame.lazy().select("k", "i"), on="k").group_by("s").agg(pl.len())
    plan = plan_lazyframe(lf, broadcast_limit=1)
    policies = [SpillPolicy(str(tmp_path / f"rank{r}"), budget_bytes=1024) for r in range(2)]

    def body(comm) -> list[pl.DataFrame]:
        tags = itertools.count()
        with comm.query_scope(1) as scoped:
            frames = rank_frames(plan, comm.rank, comm.nranks)
            limits = PartitionLimits(max_rows_per_partition=100)
            return RankExecutor(
                plan, scoped, frames, lambda: next(tags), limits, spill=policies[comm.rank]
            ).run()

    parts = rank_threads(2, body)
    got = concat_result(plan, [f for rank in parts for f in rank])
    assert_frame_equal(got, lf.collect(), check_row_order=False)
    assert all(policy.spilled_bytes > 0 for policy in policies)
    assert all(not list((tmp_path / f"rank{r}").iterdir()) for r in range(2))


@pytest.mark.parametrize("nranks", [1, 3])
def test_global_len_and_empty_inputs(on_threads, nranks):
    from engine.plan import plan_lazyframe

    empty = pl.LazyFrame(schema={"a": pl.Int64, "b": pl.String})
    queries = [
        pl.LazyFrame({"a": [1, 2, 3]}).select(pl.len()),
        empty.select(pl.len(), pl.col("a").sum(), pl.col("a").mean().alias("m")),
        empty.group_by("b").agg(pl.col("a").sum()),
        empty.filter(pl.col("a") > 1).sort("a"),
    ]
    for lf in queries:
        assert plan_lazyframe(lf).fallbacks == ()
        assert_frame_equal(on_threads(lf, nranks), lf.collect())


@pytest.mark.parametrize("nranks", [1, 2, 3])
def test_concat_and_hconcat_keep_polars_order(on_threads, frame, nranks):
    a = frame.lazy().filter(pl.col("k") < 3).select("i", "k")
    b = frame.lazy().filter(pl.col("k") == 5).select("i", "k").head(17)
    c = pl.LazyFrame({"i": [1.5], "z": ["only"]})
    queries = [
        pl.concat([a, b]),
        pl.concat([b, a, b]),
        pl.concat([a.cast({"i": pl.Float64}), c], how="diagonal"),
        pl.concat([a, b.select(i2="i")], how="horizontal_extend"),
        pl.concat([a.head(0), b]),
    ]
    for lf in queries:
        assert_frame_equal(on_threads(lf, nranks, max_rows_per_partition=23), lf.collect())
