"""Time the 22 TPC-H queries: DaskEngine on N workers, polars in one process, dask.dataframe.

``python -m benchmarks.tpch.run --scale-factor 1 --workers 2 [--queries 1,3,5]`` generates (or
reuses) the data, starts one LocalCluster of N workers, and runs every query three ways:

- **DaskEngine**: the polars query, ``collect(engine=DaskEngine(dask_client=...))``;
- **polars**: the same query, ``collect()`` in this process (all of its CPUs);
- **dask.dataframe**: the port in ``dask_queries.py``, on the same cluster.

The cluster gives each worker ``CPUs / N`` threads, used by polars' thread pool in DaskEngine's
fragments and by Dask's task threads for dask.dataframe, so both distributed columns get the
same CPUs. It prints a markdown table: seconds per query and engine (best of ``--repeat``),
ratios, bytes shuffled and fallbacks per query (from ``engine.last_query_stats``, ``n/a`` where
the engine records none), the peak RSS of polars' process and of each rank during the query, and
whether all three answers agree. The exit status is 1 when any answer disagrees.

``--memory-limit 4GiB`` sets each worker's memory limit (default: the host's memory divided
among the workers), from which the engine sizes its partitions; ``--json PATH`` also writes the
rows as JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import polars as pl

from benchmarks.peak_rss import peak_rss_bytes, reset_peak_rss
from benchmarks.tpch.compare import assert_same_result
from benchmarks.tpch.data import ensure_tpch_data, scan_tables
from benchmarks.tpch.queries import ORDER_BY, QUERIES

__all__ = ["QueryTiming", "format_table", "main", "parse_query_numbers", "read_stat"]

SHUFFLE_STAT_NAMES: Final = ("bytes_shuffled", "shuffled_bytes", "bytes_exchanged")
"""Names under which the engine's per-query statistics may report the bytes it shuffled."""


@dataclass(frozen=True)
class QueryTiming:
    """Seconds each engine took for one query, and what the comparison of answers found."""

    number: int
    polars_s: float
    dask_engine_s: float
    dask_dataframe_s: float | None
    bytes_shuffled: int | None
    fallbacks: int | None
    disagreement: str | None
    polars_peak_bytes: int | None = None
    """Peak RSS of the benchmark's process while polars ran the query."""
    rank_peak_bytes: tuple[int, ...] = ()
    """Peak RSS of each rank's worker process while DaskEngine ran the query, by rank."""


def parse_query_numbers(text: str | None) -> list[int]:
    """``"1,3,5"`` to ``[1, 3, 5]``; ``None`` to all 22; ranges like ``"1-4"`` also work.

    >>> parse_query_numbers("1,3-5")
    [1, 3, 4, 5]
    >>> parse_query_numbers("23")
    Traceback (most recent call last):
    ...
    ValueError: --queries: 23 is not a TPC-H query number; use numbers 1..22, e.g. --queries 1,3,5
    """
    if text is None:
        return sorted(QUERIES)
    numbers: list[int] = []
    for item in text.split(","):
        first, _, last = item.strip().partition("-")
        numbers.extend(range(int(first), int(last or first) + 1))
    for number in numbers:
        if number not in QUERIES:
            raise ValueError(
                f"--queries: {number} is not a TPC-H query number; "
                "use numbers 1..22, e.g. --queries 1,3,5"
            )
    return numbers


def format_table(timings: Sequence[QueryTiming]) -> str:
    """The timings as a markdown table, with a total row over the queries every engine ran.

    The peak columns are the largest over the queries in the total row.

    >>> print(format_table([QueryTiming(1, 0.5, 1.0, 4.0, 3 << 20, 0, None, 5 << 30, (2 << 30,))]))
    | query | polars (s) | DaskEngine (s) | dask.dataframe (s) | DaskEngine / polars | dask.dataframe / DaskEngine | bytes shuffled | fallbacks | polars peak RSS | rank peak RSS | answers |
    |---|---|---|---|---|---|---|---|---|---|---|
    | Q1 | 0.500 | 1.000 | 4.000 | 2.00 | 4.00 | 3.0 MiB | 0 | 5.0 GiB | 2.0 GiB | agree |
    | total | 0.500 | 1.000 | 4.000 | 2.00 | 4.00 | 3.0 MiB | 0 | 5.0 GiB | 2.0 GiB | 1/1 agree |
    """  # noqa: E501
    header = (
        "| query | polars (s) | DaskEngine (s) | dask.dataframe (s) | DaskEngine / polars "
        "| dask.dataframe / DaskEngine | bytes shuffled | fallbacks | polars peak RSS "
        "| rank peak RSS | answers |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for timing in timings:
        lines.append(
            _row(
                f"Q{timing.number}",
                timing.polars_s,
                timing.dask_engine_s,
                timing.dask_dataframe_s,
                timing.bytes_shuffled,
                timing.fallbacks,
                _format_peaks([timing.polars_peak_bytes]),
                _format_peaks(timing.rank_peak_bytes),
                "agree" if timing.disagreement is None else "DIFFER",
            )
        )
    if timings:
        all_dask = all(timing.dask_dataframe_s is not None for timing in timings)
        shuffled = [timing.bytes_shuffled for timing in timings]
        fallbacks = [timing.fallbacks for timing in timings]
        agreeing = sum(timing.disagreement is None for timing in timings)
        lines.append(
            _row(
                "total",
                sum(timing.polars_s for timing in timings),
                sum(timing.dask_engine_s for timing in timings),
                sum(timing.dask_dataframe_s or 0.0 for timing in timings) if all_dask else None,
                sum(s for s in shuffled if s is not None) if None not in shuffled else None,
                sum(f for f in fallbacks if f is not None) if None not in fallbacks else None,
                _format_peaks([max((t.polars_peak_bytes or 0 for t in timings), default=0)]),
                _format_peaks([max(max(t.rank_peak_bytes, default=0) for t in timings)]),
                f"{agreeing}/{len(timings)} agree",
            )
        )
    return "\n".join(lines)


def _row(
    label: str,
    polars_s: float,
    dask_engine_s: float,
    dask_dataframe_s: float | None,
    bytes_shuffled: int | None,
    fallbacks: int | None,
    polars_peak: str,
    rank_peaks: str,
    answers: str,
) -> str:
    cells = [
        label,
        f"{polars_s:.3f}",
        f"{dask_engine_s:.3f}",
        "-" if dask_dataframe_s is None else f"{dask_dataframe_s:.3f}",
        f"{dask_engine_s / polars_s:.2f}",
        "-" if dask_dataframe_s is None else f"{dask_dataframe_s / dask_engine_s:.2f}",
        "n/a" if bytes_shuffled is None else _format_bytes(bytes_shuffled),
        "n/a" if fallbacks is None else str(fallbacks),
        polars_peak,
        rank_peaks,
        answers,
    ]
    return "| " + " | ".join(cells) + " |"


def _format_peaks(peaks: Sequence[int | None]) -> str:
    """Peaks by rank, ``/``-separated; ``-`` where none was measured."""
    shown = [_format_bytes(peak) for peak in peaks if peak]
    return " / ".join(shown) if shown else "-"


def _format_bytes(count: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count} B"


def read_stat(stats: Any, names: Sequence[str]) -> int | None:
    """The first of ``names`` in the engine's per-query statistics, or ``None`` if absent.

    A sequence (such as the fallbacks a query took) counts as its length.

    >>> read_stat({"bytes_shuffled": 10, "fallbacks": 0}, SHUFFLE_STAT_NAMES)
    10
    >>> read_stat({"fallbacks": ("Sort", "Join")}, ("fallbacks",))
    2
    >>> read_stat(None, ("fallbacks",)) is None
    True
    """
    if stats is None:
        return None
    for name in names:
        value = stats.get(name) if isinstance(stats, Mapping) else getattr(stats, name, None)
        if value is not None:
            return len(value) if isinstance(value, (tuple, list)) else int(value)
    return None


def best_of(repeat: int, run: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``repeat`` times; the fastest time and the last result."""
    best = float("inf")
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return best, result


def _disagreement(
    results: Mapping[str, pl.DataFrame], reference: pl.DataFrame, order_by: Sequence[str]
) -> str | None:
    for name, result in results.items():
        try:
            assert_same_result(result, reference, order_by=order_by)
        except AssertionError as error:
            return f"{name}: {error}"
    return None


def run_benchmark(
    data_dir: Path,
    scale_factor: float,
    numbers: Sequence[int],
    client: Any,
    *,
    repeat: int,
    with_dask_dataframe: bool,
    report: Callable[[str], None] = print,
) -> list[QueryTiming]:
    """Run and time each query on the three engines, checking that their answers agree."""
    from benchmarks.tpch.dask_queries import DASK_QUERIES, read_tables, to_polars
    from engine.dask import DaskEngine

    tables = scan_tables(data_dir)
    dask_tables = read_tables(data_dir) if with_dask_dataframe else {}
    timings = []
    with DaskEngine(dask_client=client, engine_options={"fallback_mode": "silent"}) as engine:
        # Warm up both distributed columns: the first task on a worker pays its imports.
        pl.LazyFrame({"warm_up": [1]}).collect(engine=engine)
        if with_dask_dataframe:
            with client.as_current():
                dask_tables["region"]["r_regionkey"].sum().compute()
        for number in numbers:
            query = QUERIES[number](tables, scale_factor=scale_factor)
            reset_peak_rss()
            polars_s, expected = best_of(repeat, query.collect)
            polars_peak = peak_rss_bytes()
            stats_before = getattr(engine, "last_query_stats", None)
            client.run(reset_peak_rss)
            engine_s, engine_result = best_of(repeat, lambda q=query: q.collect(engine=engine))
            rank_peaks = _peaks_by_rank(client)
            stats = getattr(engine, "last_query_stats", None)
            stats = None if stats is stats_before else stats  # the query recorded none
            results = {"DaskEngine": engine_result}
            dask_s = None
            if with_dask_dataframe:
                with client.as_current():
                    dask_s, pandas_result = best_of(
                        repeat,
                        lambda n=number: DASK_QUERIES[n](dask_tables, scale_factor=scale_factor),
                    )
                results["dask.dataframe"] = to_polars(pandas_result)
            timing = QueryTiming(
                number,
                polars_s,
                engine_s,
                dask_s,
                read_stat(stats, SHUFFLE_STAT_NAMES),
                read_stat(stats, ("fallbacks",)),
                _disagreement(results, expected, ORDER_BY.get(number, ())),
                polars_peak,
                rank_peaks,
            )
            report(
                f"Q{number}: polars {polars_s:.3f} s ({_format_bytes(polars_peak)} peak), "
                f"DaskEngine {engine_s:.3f} s ({_format_peaks(rank_peaks)} peak), "
                + (f"dask.dataframe {dask_s:.3f} s" if dask_s is not None else "no dask.dataframe")
                + ("" if timing.disagreement is None else f"; DIFFER {timing.disagreement}")
            )
            timings.append(timing)
    return timings


def _peaks_by_rank(client: Any) -> tuple[int, ...]:
    """Each worker's peak RSS, in the order of the workers' names (the engine's rank order)."""
    peaks = client.run(peak_rss_bytes)
    names = {address: info["name"] for address, info in client.scheduler_info()["workers"].items()}
    return tuple(peaks[address] for address in sorted(peaks, key=lambda a: str(names.get(a, a))))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tpch.run",
        description="Time TPC-H on DaskEngine, polars and dask.dataframe; check the answers.",
    )
    parser.add_argument("--scale-factor", type=float, default=1.0, help="TPC-H scale factor")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers (ranks)")
    parser.add_argument("--queries", help="comma-separated numbers or ranges (default: all 22)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per query; best is kept")
    parser.add_argument("--data-dir", type=Path, help="TPC-H parquet (default: the cache)")
    parser.add_argument(
        "--no-dask-dataframe", action="store_true", help="skip the dask.dataframe column"
    )
    parser.add_argument(
        "--memory-limit",
        help="each worker's memory limit, e.g. 4GiB (default: the host's memory / workers)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.workers < 1 or args.repeat < 1:
        parser.error(f"--workers={args.workers} and --repeat={args.repeat} must be at least 1")
    return args


def benchmark_cluster(n_workers: int, threads: int, memory_limit_bytes: int) -> Any:
    """The benchmarks' LocalCluster: one process per worker, ``threads`` polars threads each.

    ``POLARS_MAX_THREADS`` goes in the worker's environment because polars sizes its pool when
    the worker imports it.
    """
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads,
        processes=True,
        memory_limit=memory_limit_bytes,
        dashboard_address=":0",
        host="127.0.0.1",
        env={"POLARS_MAX_THREADS": str(threads)},
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns 1 when the engines' answers disagree on any query."""
    from dask.utils import parse_bytes
    from distributed import Client

    from engine.local_cluster import plan_this_host

    args = parse_args(argv)
    numbers = parse_query_numbers(args.queries)
    # The in-process scheduler logs every dask.dataframe p2p shuffle at WARNING level.
    logging.getLogger("distributed.shuffle").setLevel(logging.ERROR)
    data_dir = ensure_tpch_data(args.scale_factor, args.data_dir)
    plan = plan_this_host(args.workers)
    threads = plan.threads_per_worker_pool
    memory_limit = (
        plan.memory_limit_bytes if args.memory_limit is None else parse_bytes(args.memory_limit)
    )
    print(
        f"TPC-H SF {args.scale_factor:g} from {data_dir}; {args.workers} workers x {threads} "
        f"thread(s), {memory_limit / (1 << 30):.1f} GiB each; "
        f"polars {pl.__version__}; best of {args.repeat}"
    )
    start = time.perf_counter()
    with (
        benchmark_cluster(args.workers, threads, memory_limit) as cluster,
        Client(cluster) as client,
    ):
        print(f"cluster started in {time.perf_counter() - start:.1f} s")
        timings = run_benchmark(
            data_dir,
            args.scale_factor,
            numbers,
            client,
            repeat=args.repeat,
            with_dask_dataframe=not args.no_dask_dataframe,
        )
    print()
    print(format_table(timings))
    if args.json is not None:
        args.json.write_text(json.dumps([dataclasses.asdict(t) for t in timings], indent=1))
    if all(timing.bytes_shuffled is None for timing in timings):
        print("\nbytes shuffled: n/a, the engine recorded no per-query statistics")
    return 0 if all(timing.disagreement is None for timing in timings) else 1


if __name__ == "__main__":
    raise SystemExit(main())
