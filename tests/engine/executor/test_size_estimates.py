"""Join size estimates come from parquet's uncompressed sizes, per projected column."""

from __future__ import annotations

import os

import polars as pl
import pyarrow.parquet as pq
import pytest

from engine.plan import plan_lazyframe
from engine.plan.estimates import scan_size
from engine.plan.nodes import Join
from engine.plan.small_inputs import estimated_input_bytes

pytestmark = pytest.mark.timeout(60)

ROWS = 100_000


@pytest.fixture
def repetitive(tmp_path) -> str:
    """Long, nearly identical strings (zstd shrinks them ~20x) and a small int column."""
    path = str(tmp_path / "repetitive.parquet")
    frame = pl.DataFrame(
        {"k": list(range(ROWS)), "text": [("lorem ipsum " * 20) + str(i) for i in range(ROWS)]}
    )
    frame.write_parquet(path, compression="zstd")
    return path


def _uncompressed(path: str) -> int:
    metadata = pq.read_metadata(path)
    return sum(
        metadata.row_group(g).column(c).total_uncompressed_size
        for g in range(metadata.num_row_groups)
        for c in range(metadata.num_columns)
    )


def _strategies(lf: pl.LazyFrame, limit: int) -> list[str]:
    plan = plan_lazyframe(lf, broadcast_limit=limit)
    assert isinstance(plan.root, Join)
    return [plan.root.strategy]


def test_estimate_is_the_uncompressed_size(repetitive):
    on_disk = os.path.getsize(repetitive)
    uncompressed = _uncompressed(repetitive)
    assert uncompressed > 10 * on_disk  # the fixture is what the test needs
    size = scan_size("parquet", [repetitive])
    assert size.total_bytes == pytest.approx(uncompressed, rel=0.01)
    assert set(size.column_bytes) == {"k", "text"}
    assert size.column_bytes["k"] == pytest.approx(8 * ROWS, rel=0.1)


def test_a_side_small_on_disk_but_large_in_memory_is_shuffled(repetitive):
    # More rows than the file: a side larger than the other is broadcast only when tiny.
    facts = pl.LazyFrame({"k": list(range(4 * ROWS)), "v": list(range(4 * ROWS))})
    big = pl.scan_parquet(repetitive)
    limit = 4 * os.path.getsize(repetitive)  # above the file, far below its uncompressed size
    # A left join can only broadcast its right side: the parquet file's.
    assert _strategies(facts.join(big, on="k", how="left"), limit) == ["shuffle"]
    # Only the small key column crosses the join: its share of the file is what counts.
    projected = facts.join(big.select("k"), on="k", how="left")
    assert _strategies(projected, limit) == ["broadcast_right"]


def test_dictionary_encoded_columns_count_at_least_their_width(tmp_path):
    path = str(tmp_path / "dict.parquet")
    pl.DataFrame({"flag": ["A", "B"] * (ROWS // 2)}).write_parquet(path)
    assert _uncompressed(path) < 2 * ROWS  # run-length-encoded dictionary indices
    assert scan_size("parquet", [path]).column_bytes["flag"] >= 16 * ROWS


def test_nested_columns_and_hive_directories(tmp_path):
    frame = pl.DataFrame(
        {
            "part": [1, 2] * 50,
            "s": [{"a": i, "b": str(i)} for i in range(100)],
            "l": [[i, i + 1] for i in range(100)],
            "x": list(range(100)),
        }
    )
    frame.write_parquet(tmp_path / "hive", partition_by="part")
    (tmp_path / "hive" / "_SUCCESS").write_text("")
    size = scan_size("parquet", [str(tmp_path / "hive")])
    assert {"s", "l", "x"} <= set(size.column_bytes)
    assert size.column_bytes["s"] >= 24 * 100  # both leaves of the struct: an int and a string
    assert size.column_bytes["x"] >= 8 * 100


def test_text_formats_are_taken_at_file_size(tmp_path):
    path = tmp_path / "a.csv"
    pl.DataFrame({"a": list(range(1000))}).write_csv(path)
    assert scan_size("csv", [str(path)]).total_bytes == os.path.getsize(path)


def test_a_selective_filter_makes_a_large_dimension_small_enough_to_broadcast(tmp_path) -> None:
    """TPC-H Q17's ``part`` at SF10: too large to broadcast as read, tiny after its filter.

    Sized before the filter, both sides were hash-shuffled (all of ``lineitem``, 1.8 GiB).
    """
    parts = tmp_path / "parts.parquet"
    facts = tmp_path / "facts.parquet"
    pl.DataFrame(
        {"k": list(range(ROWS)), "brand": [f"brand#{i % 1000}" for i in range(ROWS)]}
    ).write_parquet(parts)
    pl.DataFrame({"k": [i % ROWS for i in range(2 * ROWS)], "x": range(2 * ROWS)}).write_parquet(
        facts
    )
    dims = pl.scan_parquet(parts).filter(pl.col("brand") == "brand#7")
    query = pl.scan_parquet(facts).join(dims, on="k")
    limit = 64 * 1024  # the filtered side: 100 rows; unfiltered: about 2 MiB
    assert _strategies(query, limit) == ["broadcast_right"]
    assert _strategies(pl.scan_parquet(facts).join(pl.scan_parquet(parts), on="k"), limit) == [
        "shuffle"
    ]


def test_a_plain_parquet_file_counts_its_rows_from_the_footer_and_sees_rewrites(tmp_path):
    from engine.plan import dsl
    from engine.plan.estimates import plain_parquet_rows

    path = tmp_path / "rows.parquet"
    pl.DataFrame({"a": range(10)}).write_parquet(path)

    def scan_node(lf: pl.LazyFrame) -> dict:
        return dsl.serialize_plan(lf)

    assert plain_parquet_rows(scan_node(pl.scan_parquet(path))) == 10
    pl.DataFrame({"a": range(25)}).write_parquet(path)  # new size: the cached footer is stale
    assert plain_parquet_rows(scan_node(pl.scan_parquet(path))) == 25
    # Directories and globs are counted by polars: its listing is the one that counts.
    assert plain_parquet_rows(scan_node(pl.scan_parquet(tmp_path / "*.parquet"))) is None
    assert plain_parquet_rows(scan_node(pl.scan_parquet(path, n_rows=3))) is None


def test_a_whole_query_counts_only_the_columns_polars_reads(repetitive):
    """The one-rank engine picks polars' engine, or stages, from this estimate: a query that
    reads a small column of a wide file must not look as large as the whole file."""
    whole = estimated_input_bytes(pl.scan_parquet(repetitive))
    keys_only = estimated_input_bytes(pl.scan_parquet(repetitive).select(pl.col("k").sum()))
    assert whole >= _uncompressed(repetitive) * 0.9
    assert keys_only < whole / 20
