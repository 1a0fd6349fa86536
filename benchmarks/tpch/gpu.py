"""TPC-H with GPU fragments: polars on CPU, cudf-polars in one process, and DaskEngine on GPUs.

``python -m benchmarks.tpch.gpu --scale-factor 1 --workers 1 --repeat 2`` on a machine with
GPUs and cudf-polars. DaskEngine starts its own LocalCluster, so the nanny preload gives each
worker its own GPU, and ``fragment_engine="gpu"`` makes every fragment run through
``pl.GPUEngine`` (it raises instead of silently running on the CPU). The three answers are
compared per query; the exit status is 1 when any differ or fail.

Why a separate runner: ``benchmarks.tpch.run`` builds a plain LocalCluster without the preload
(no ``CUDA_VISIBLE_DEVICES`` per worker) to compare with dask.dataframe on CPUs; this one asks
what the GPU path gives against cudf-polars' own single-GPU engine.
"""

from __future__ import annotations

import argparse
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.tpch.compare import assert_same_result
from benchmarks.tpch.data import ensure_tpch_data, scan_tables
from benchmarks.tpch.queries import QUERIES
from benchmarks.tpch.run import best_of, parse_query_numbers


def time_or_error(repeat: int, run: Callable[[], Any]) -> tuple[float | None, Any]:
    """Like :func:`best_of`, but a failure becomes ``(None, message)`` so the table goes on."""
    try:
        return best_of(repeat, run)
    except Exception as error:
        traceback.print_exc()
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"


def main(argv: Sequence[str] | None = None) -> int:
    """Print one row per query; return 1 when any answer differs or any engine failed."""
    from engine.dask import DaskEngine

    parser = argparse.ArgumentParser(prog="python -m benchmarks.tpch.gpu", description=__doc__)
    parser.add_argument("--scale-factor", type=float, default=1.0, help="TPC-H scale factor")
    parser.add_argument("--workers", type=int, default=None, help="GPUs (default: all)")
    parser.add_argument("--queries", help="comma-separated numbers or ranges (default: all 22)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per query; best is kept")
    parser.add_argument("--data-dir", type=Path, help="TPC-H parquet (default: the cache)")
    args = parser.parse_args(argv)
    tables = scan_tables(ensure_tpch_data(args.scale_factor, args.data_dir))
    gpu = pl.GPUEngine(raise_on_fail=True)
    failures = 0
    totals = {"polars cpu": 0.0, "cudf-polars": 0.0, "DaskEngine gpu": 0.0}
    options = {"fragment_engine": "gpu", "fallback_mode": "raise"}
    start = time.perf_counter()
    with DaskEngine(n_workers=args.workers, engine_options=options) as engine:
        print(
            f"DaskEngine on {engine.nranks} GPU worker(s) up in {time.perf_counter() - start:.1f} s"
        )
        pl.LazyFrame({"warm_up": [1]}).collect(engine=engine)
        print("| query | polars cpu s | cudf-polars s | DaskEngine gpu s | answers |")
        print("|---|---|---|---|---|")
        for number in parse_query_numbers(args.queries):
            query = QUERIES[number](tables, scale_factor=args.scale_factor)
            cpu_s, expected = best_of(args.repeat, query.collect)
            runs = {
                "cudf-polars": time_or_error(args.repeat, lambda q=query: q.collect(engine=gpu)),
                "DaskEngine gpu": time_or_error(
                    args.repeat, lambda q=query: q.collect(engine=engine)
                ),
            }
            verdicts = []
            for name, (seconds, result) in runs.items():
                if seconds is None:
                    verdicts.append(f"{name} failed: {result}")
                    continue
                totals[name] += seconds
                try:
                    assert_same_result(result, expected)
                except AssertionError as error:
                    verdicts.append(f"{name} differs: {str(error).splitlines()[0][:80]}")
            totals["polars cpu"] += cpu_s
            failures += bool(verdicts)
            cells = [f"{s:.3f}" if s is not None else "-" for s, _ in runs.values()]
            verdict = "; ".join(verdicts) or "agree"
            print(f"| Q{number} | {cpu_s:.3f} | {' | '.join(cells)} | {verdict} |")
        sums = " | ".join(f"{total:.2f}" for total in totals.values())
        print(f"| total | {sums} | {failures} differ or fail |")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
