"""group_by over generated parquet: DaskEngine on N workers against polars in one process.

``python -m benchmarks.groupby --rows 20000000 --workers 2`` writes (or reuses) the data, starts a
LocalCluster of N workers (each with ``CPUs / N`` polars threads, so both sides get the same
CPUs), runs the same query both ways ``--repeat`` times after one warm-up, checks the answers
agree, and prints the best times and their ratio.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from engine.dask import DaskEngine


def ensure_data(directory: Path, rows: int, files: int) -> Path:
    """``files`` parquet files of ``rows`` rows in all: 100k int keys, a tag, two values."""
    marker = directory / f".complete-{rows}-{files}"
    if marker.exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(42)
    per_file = rows // files
    for index in range(files):
        n = per_file if index < files - 1 else rows - per_file * (files - 1)
        pl.DataFrame(
            {
                "key": rng.integers(0, 100_000, n),
                "tag": rng.integers(0, 16, n).astype(np.int8),
                "amount": rng.random(n) * 1000,
                "quantity": rng.integers(1, 50, n),
            }
        ).write_parquet(directory / f"part-{index:03d}.parquet", row_group_size=1_000_000)
    marker.touch()
    return directory


def query(source: str) -> pl.LazyFrame:
    """The benchmark query: a filter, a derived column, a group_by with five aggregations."""
    return (
        pl.scan_parquet(source)
        .filter(pl.col("tag") < 12)
        .with_columns(revenue=pl.col("amount") * pl.col("quantity"))
        .group_by("key")
        .agg(
            pl.col("revenue").sum(),
            pl.col("amount").mean().alias("avg_amount"),
            pl.col("quantity").max(),
            pl.col("tag").min(),
            pl.len(),
        )
    )


def best_of(run: Callable[[], pl.DataFrame], repeat: int) -> tuple[float, pl.DataFrame]:
    """Best wall time of ``repeat`` runs after one warm-up, and the last answer."""
    answer = run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        answer = run()
        times.append(time.perf_counter() - start)
    return min(times), answer


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print times and the ratio polars / DaskEngine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-rows-per-partition", type=int, default=1_000_000)
    parser.add_argument(
        "--data-dir", type=Path, default=Path.home() / ".cache" / "polars-hpc" / "groupby"
    )
    args = parser.parse_args(argv)
    source = str(ensure_data(args.data_dir, args.rows, args.files) / "*.parquet")
    lf = query(source)
    polars_s, expected = best_of(lf.collect, args.repeat)
    options = {"max_rows_per_partition": args.max_rows_per_partition}
    with DaskEngine(n_workers=args.workers, engine_options=options) as engine:
        engine_s, got = best_of(lambda: lf.collect(engine=engine), args.repeat)
        shuffled = engine.last_query_stats["bytes_shuffled"]
    assert_frame_equal(got.sort("key"), expected.sort("key"))
    print(f"rows={args.rows:,} files={args.files} cpus={len(os.sched_getaffinity(0))}")
    print(f"| engine | best of {args.repeat} (s) |")
    print("|---|---|")
    print(f"| polars, one process | {polars_s:.3f} |")
    print(f"| DaskEngine, {args.workers} workers | {engine_s:.3f} |")
    print(f"bytes shuffled by DaskEngine: {shuffled:,}")
    print(f"ratio polars / DaskEngine = {polars_s / engine_s:.2f} (above 1: DaskEngine faster)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
