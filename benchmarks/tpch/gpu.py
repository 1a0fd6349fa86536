"""TPC-H on GPUs: polars on CPU, cudf-polars in one process, cudf-polars' DaskEngine, and ours.

``python -m benchmarks.tpch.gpu --scale-factor 10 --ranks-per-gpu 1 --repeat 2`` on a machine
with GPUs and cudf-polars prints one row per query and a total row, and each engine's start-up.
In one run on one machine, against the same polars answers:

- ``polars cpu``: polars' own engine in this process (the reference answer);
- ``cudf-polars``: ``pl.GPUEngine()`` in this process (one GPU);
- ``anchor``: cudf-polars' own ``cudf_polars.engine.dask.DaskEngine``, one Dask worker per rank,
  created after the default GPU engine of this process is shut down (they refuse to coexist);
- ``ours``: :class:`engine.dask.DaskEngine` with ``fallback_mode="raise"``, so a query that
  cudf-polars refuses fails instead of quietly running on the CPU.

``--ranks-per-gpu 2`` puts two ranks on every GPU (both Dask engines), so device shuffles
between ranks run on a one-GPU machine. Start-up is the time to a ready engine, the Dask
cluster's start included. The exit status is 1 when any answer differs or any engine fails.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.tpch.compare import assert_same_result
from benchmarks.tpch.data import ensure_tpch_data, scan_tables
from benchmarks.tpch.queries import ORDER_BY, QUERIES
from benchmarks.tpch.run import best_of, parse_query_numbers

ENGINES = ("polars cpu", "cudf-polars", "anchor", "ours")


def time_or_error(repeat: int, run: Callable[[], Any]) -> tuple[float | None, Any]:
    """Like :func:`best_of`, but a failure becomes ``(None, message)`` so the table goes on."""
    try:
        return best_of(repeat, run)
    except Exception as error:
        traceback.print_exc()
        return None, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"


def gpu_spec_cluster(ranks_per_gpu: int) -> Any:
    """A Dask cluster of ``ranks_per_gpu`` single-threaded workers per visible GPU.

    Each worker's ``CUDA_VISIBLE_DEVICES`` names its GPU, as the anchor's own cluster does.
    """
    import distributed
    import distributed.system

    from preload.gpus import nvml_device_count, visible_gpu_ids

    gpus = visible_gpu_ids(os.environ, nvml_device_count())
    workers = {
        f"rank-{rank}": {
            "cls": distributed.Nanny,
            "options": {
                "nthreads": 1,
                "silence_logs": logging.WARNING,
                "memory_limit": distributed.system.MEMORY_LIMIT,
                "env": {"CUDA_VISIBLE_DEVICES": gpus[rank // ranks_per_gpu]},
            },
        }
        for rank in range(len(gpus) * ranks_per_gpu)
    }
    return distributed.SpecCluster(workers=workers, silence_logs=logging.WARNING)


@contextmanager
def anchor_engine(ranks_per_gpu: int) -> Iterator[Any]:
    """cudf-polars' ``DaskEngine``: its own cluster for one rank per GPU, else ours above."""
    from cudf_polars.engine.dask import DaskEngine as CudfDaskEngine
    from cudf_polars.engine.default_singleton_engine import DefaultSingletonEngine

    DefaultSingletonEngine.shutdown()
    if ranks_per_gpu == 1:
        with CudfDaskEngine() as engine:
            yield engine
        return
    import distributed

    with (
        gpu_spec_cluster(ranks_per_gpu) as cluster,
        distributed.Client(cluster) as client,
        CudfDaskEngine(dask_client=client, engine_options={"allow_gpu_sharing": True}) as engine,
    ):
        yield engine


@contextmanager
def our_engine(ranks_per_gpu: int) -> Iterator[Any]:
    """Our ``DaskEngine``: its own cluster for one rank per GPU, else the shared-GPU cluster."""
    from engine.dask import DaskEngine

    options = {"fallback_mode": "raise"}
    if ranks_per_gpu == 1:
        with DaskEngine(engine_options=options) as engine:
            yield engine
        return
    import distributed

    with (
        gpu_spec_cluster(ranks_per_gpu) as cluster,
        distributed.Client(cluster) as client,
        DaskEngine(dask_client=client, engine_options=options) as engine,
    ):
        yield engine


def run_engine(
    name: str,
    make: Callable[[], Any],
    queries: dict[int, pl.LazyFrame],
    repeat: int,
) -> tuple[float | None, dict[int, tuple[float | None, Any]]]:
    """Start an engine, warm it up, time every query; (start-up seconds, per-query results)."""
    start = time.perf_counter()
    try:
        manager = make()
        engine = manager.__enter__()
    except Exception:
        traceback.print_exc()
        return None, {n: (None, f"{name} did not start") for n in queries}
    startup = time.perf_counter() - start
    try:
        pl.LazyFrame({"warm_up": [1]}).select(pl.col("warm_up").sum()).collect(engine=engine)
        results = {
            number: time_or_error(repeat, lambda q=query: q.collect(engine=engine))
            for number, query in queries.items()
        }
    finally:
        manager.__exit__(None, None, None)
    return startup, results


def main(argv: Sequence[str] | None = None) -> int:
    """Print one row per query; return 1 when any answer differs or any engine failed."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tpch.gpu", description=__doc__)
    parser.add_argument("--scale-factor", type=float, default=1.0, help="TPC-H scale factor")
    parser.add_argument("--ranks-per-gpu", type=int, default=1, help="Dask ranks on each GPU")
    parser.add_argument("--queries", help="comma-separated numbers or ranges (default: all 22)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per query; best is kept")
    parser.add_argument("--data-dir", type=Path, help="TPC-H parquet (default: the cache)")
    parser.add_argument(
        "--engines",
        default=",".join(ENGINES),
        help=f"comma-separated subset of {', '.join(ENGINES)} (polars cpu always runs)",
    )
    args = parser.parse_args(argv)
    wanted = {"polars cpu", *(name.strip() for name in args.engines.split(","))}
    tables = scan_tables(ensure_tpch_data(args.scale_factor, args.data_dir))
    numbers = parse_query_numbers(args.queries)
    queries = {n: QUERIES[n](tables, scale_factor=args.scale_factor) for n in numbers}

    expected = {n: best_of(args.repeat, query.collect) for n, query in queries.items()}
    runs: dict[str, dict[int, tuple[float | None, Any]]] = {"polars cpu": expected}
    startups: dict[str, float | None] = {"polars cpu": 0.0}
    makers: dict[str, Callable[[], Any]] = {
        "cudf-polars": lambda: _gpu_engine_context(),
        "anchor": lambda: anchor_engine(args.ranks_per_gpu),
        "ours": lambda: our_engine(args.ranks_per_gpu),
    }
    for name, make in makers.items():
        if name in wanted:
            startups[name], runs[name] = run_engine(name, make, queries, args.repeat)
    return print_table(numbers, runs, startups, args)


@contextmanager
def _gpu_engine_context() -> Iterator[pl.GPUEngine]:
    yield pl.GPUEngine(raise_on_fail=True)


def print_table(
    numbers: Sequence[int],
    runs: dict[str, dict[int, tuple[float | None, Any]]],
    startups: dict[str, float | None],
    args: argparse.Namespace,
) -> int:
    """The markdown table; the exit status (1 if any engine failed or disagreed)."""
    names = list(runs)
    print(
        f"TPC-H SF{args.scale_factor:g}, {args.ranks_per_gpu} rank(s) per GPU for the Dask "
        f"engines, best of {args.repeat}; seconds"
    )
    print("| query | " + " | ".join(names) + " | answers |")
    print("|---" * (len(names) + 2) + "|")
    totals = dict.fromkeys(names, 0.0)
    failures = 0
    for number in numbers:
        reference = runs["polars cpu"][number][1]
        cells, verdicts = [], []
        for name in names:
            seconds, result = runs[name][number]
            if seconds is None:
                cells.append("-")
                verdicts.append(f"{name} failed: {result}")
                continue
            totals[name] += seconds
            cells.append(f"{seconds:.3f}")
            try:
                assert_same_result(result, reference, order_by=ORDER_BY.get(number, ()))
            except AssertionError as error:
                verdicts.append(f"{name} differs: {str(error).splitlines()[0][:80]}")
        failures += bool(verdicts)
        print(f"| Q{number} | {' | '.join(cells)} | {'; '.join(verdicts) or 'agree'} |")
    print(f"| total | {' | '.join(f'{totals[n]:.2f}' for n in names)} | {failures} differ/fail |")
    start_cells = " | ".join("-" if startups[n] is None else f"{startups[n]:.2f}" for n in names)
    print(f"| start-up | {start_cells} | |")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
