"""The embedded default job: generate parquet data, run a query on every worker, say where.

``python -m launcher.demo`` (and ``python -m launcher.run`` without a script) runs it: on a
laptop it starts a local cluster, under ``srun``/``mpiexec`` it joins the launcher's cluster.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import polars.testing

from engine.dask import DaskEngine

__all__ = ["demo_query", "main", "write_demo_data"]


def write_demo_data(directory: Path, *, n_files: int = 4, rows_per_file: int = 250_000) -> Path:
    """Write ``n_files`` parquet files of synthetic orders; return the glob that reads them."""
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(n_files):
        start = index * rows_per_file
        ids = pl.int_range(start, start + rows_per_file, eager=True)
        pl.DataFrame(
            {
                "order_id": ids,
                "customer_id": (ids * 7919) % 1000,
                "amount": ((ids * 104729) % 50_000) / 100,
                "region": pl.Series(["north", "south", "east", "west"])
                .gather(ids % 4)
                .cast(pl.Categorical),
            }
        ).write_parquet(directory / f"orders-{index:03d}.parquet")
    return directory / "*.parquet"


def demo_query(source: str | Path) -> pl.LazyFrame:
    """Revenue per region and customer over large orders: a filter, a group_by and a sort."""
    return (
        pl.scan_parquet(source)
        .filter(pl.col("amount") > 100)
        .group_by("region", "customer_id")
        .agg(pl.col("amount").sum().alias("revenue"), pl.len().alias("orders"))
        .sort("revenue", descending=True)
        .head(10)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo and print the result and where each worker ran."""
    parser = argparse.ArgumentParser(
        prog="python -m launcher.demo",
        description="Generate demo parquet data and run one query on a Dask cluster.",
    )
    parser.add_argument("--data-dir", type=Path, help="data directory (default: temporary)")
    parser.add_argument("--files", type=int, default=4, help="parquet files to generate")
    parser.add_argument("--rows-per-file", type=int, default=250_000, help="rows in each file")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="polars-hpc-demo-") as scratch:
        source = write_demo_data(
            args.data_dir or Path(scratch), n_files=args.files, rows_per_file=args.rows_per_file
        )
        with DaskEngine() as engine:
            print(f"cluster has {engine.nranks} workers")
            for info in engine.gather_cluster_info():
                print(
                    f"  rank {info.rank}: host={info.hostname} pid={info.pid} "
                    f"CUDA_VISIBLE_DEVICES={info.cuda_visible_devices} "
                    f"cpus={info.cpu_affinity} memory_limit={info.memory_limit}"
                )
            result = demo_query(source).collect(engine=engine)
        expected = demo_query(source).collect()
        pl.testing.assert_frame_equal(result, expected)
        print(result)
        print("result matches polars' own engine")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
