"""Where DaskEngine's time goes on CPU workers: timers around the engine's own functions.

``python -m benchmarks.profile_cpu --data-dir DIR --scale-factor 10 --workers 1 --queries 1,6``

Starts a LocalCluster as ``benchmarks.tpch.run`` does, wraps (in every worker and in this
process; the engine's code is not changed) the functions one query's time is spent in, and
prints per query: polars' time, polars' time with every table read as ``scan.slice(0, rows)``
(what a rank's scan partition is), the engine's time, the client's share (planning, submit,
waiting, concatenating the result) and each rank's exclusive seconds per category (a
category's time less the wrapped calls inside it; ``rank other`` is the executor's own Python).
Then the warm latency of a one-row query, engine against polars. ``--json`` keeps everything.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.tpch.data import scan_tables, table_paths
from benchmarks.tpch.queries import QUERIES
from benchmarks.tpch.run import benchmark_cluster, parse_query_numbers

Totals = dict[str, list[float]]
"""Category -> [exclusive seconds, calls, inclusive seconds, longest call]."""

_TOTALS: Totals = {}
_LOCAL = threading.local()
_INSTALLED: set[tuple[str, str]] = set()

WORKER_PATCHES: tuple[tuple[str, str, str], ...] = (
    ("engine.executor.dispatch", "_run_rank", "rank other"),
    ("engine.executor.fragments", "FragmentRunner.collect", "fragment collect"),
    ("engine.executor.reads", "ReadObservingRunner.collect", "fragment collect"),
    ("engine.executor.reads", "ReadObservingRunner._observe", "stats"),
    ("engine.stats", "column_share", "stats"),
    ("engine.plan.dsl", "lazyframe_from_dsl", "dsl parse"),
    ("engine.executor.fragments", "_registered_leaf", "register frame leaf"),
    ("engine.executor.frames", "to_ipc", "serialise"),
    ("engine.executor.exchange", "to_ipc", "serialise"),
    ("engine.executor.frames", "from_ipc", "deserialise"),
    ("engine.executor.exchange", "from_ipc", "deserialise"),
    ("engine.executor.rank", "shuffle", "transfer+wait"),
    ("engine.executor.rank", "allgather_frames", "transfer+wait"),
    ("engine.executor.rank", "gather_to_root", "transfer+wait"),
    ("engine.executor.exchange", "ShuffleReceiver._spill", "spill"),
    ("engine.executor.rank", "concat_frames", "concat"),
    ("engine.executor.exchange", "concat_frames", "concat"),
    ("engine.executor.dispatch", "concat_frames", "concat"),
    ("engine.executor.rank", "hash_partition", "hash partition"),
    ("engine.executor.frames", "partition_ids", "hash ids"),
    ("engine.plan.dsl", "slice_leaf", "scan partitions"),
)
CLIENT_PATCHES: tuple[tuple[str, str, str], ...] = (
    ("engine.executor.client", "plan_for_ranks", "client plan"),
    ("engine.executor.client", "submit_ranks", "client submit"),
    ("engine.executor.client", "gather_outputs", "client wait+fetch"),
    ("engine.executor.client", "concat_result", "client concat"),
)


def _timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        stack: list[float] = _LOCAL.__dict__.setdefault("stack", [])
        stack.append(0.0)
        start = time.perf_counter()
        result = None
        try:
            result = function(*args, **kwargs)
            return result
        finally:
            elapsed = time.perf_counter() - start
            inner = stack.pop()
            entry = _TOTALS.setdefault(name, [0.0, 0.0, 0.0, 0.0])
            entry[0] += elapsed - inner
            entry[1] += 1
            entry[2] += elapsed
            entry[3] = max(entry[3], elapsed)
            if stack:
                stack[-1] += elapsed
            if name == "scan partitions" and len(args) > 2:  # slice_leaf(json, offset, rows)
                _TOTALS.setdefault("scan partition rows", [0.0] * 4)[0] += args[2]
            if name == "serialise" and isinstance(result, bytes):
                _TOTALS.setdefault("serialised bytes", [0.0] * 4)[0] += len(result)

    return wrapper


def install(patches: Sequence[tuple[str, str, str]]) -> None:
    """Wrap each ``(module, [Class.]attribute, category)`` once in this process."""
    import importlib

    for module_name, attribute, name in patches:
        if (module_name, attribute) in _INSTALLED:
            continue
        owner: Any = importlib.import_module(module_name)
        *classes, leaf = attribute.split(".")
        for cls in classes:
            owner = getattr(owner, cls)
        setattr(owner, leaf, _timed(name, getattr(owner, leaf)))
        _INSTALLED.add((module_name, attribute))


def install_worker() -> None:
    """``client.run`` target: wrap the worker-side functions."""
    install(WORKER_PATCHES)


def use_fragment_engine(name: str) -> None:
    """``client.run`` target: the workers' CPU fragments collect with polars engine ``name``.

    An experiment, not the engine's behaviour: the scan-read statistics are not recorded.
    """
    from engine.executor.reads import ReadObservingRunner

    def collect(
        self: ReadObservingRunner, lf: pl.LazyFrame, *, over_registered: bool = False
    ) -> pl.DataFrame:
        return lf.collect(engine=name)  # type: ignore[arg-type]

    ReadObservingRunner.collect = collect  # type: ignore[method-assign]


def take_totals() -> Totals:
    """``client.run`` target: this process's totals since the last call, then reset."""
    taken = {name: list(entry) for name, entry in _TOTALS.items()}
    _TOTALS.clear()
    return taken


def _sliced_tables(data_dir: Path) -> dict[str, pl.LazyFrame]:
    """Every table as ``scan.slice(0, rows)``: a whole-table scan partition."""
    sliced = {}
    for name, path in table_paths(data_dir).items():
        rows = pl.scan_parquet(path).select(pl.len()).collect().item()
        sliced[name] = pl.scan_parquet(path).slice(0, rows)
    return sliced


def _best(repeat: int, run: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _format(query: str, record: dict[str, Any]) -> str:
    ranks: list[Totals] = record["ranks"]
    client: Totals = record["client"]
    lines = [
        f"{query}: polars {record['polars_s']:.3f} s, polars over scan.slice "
        f"{record['polars_sliced_s']:.3f} s, DaskEngine {record['engine_s']:.3f} s",
        "  client: "
        + ", ".join(f"{n} {e[0]:.3f} s ({int(e[1])}x)" for n, e in sorted(client.items())),
    ]
    for rank, totals in enumerate(ranks):
        spent = sorted(totals.items(), key=lambda item: -item[1][0])
        cells = [
            f"{n} {e[0]:.3f} s/{int(e[1])} calls/max {e[3]:.3f}"
            for n, e in spent
            if n not in ("scan partitions", "scan partition rows", "serialised bytes")
        ]
        parts = totals.get("scan partitions", [0.0, 0.0])[1]
        rows = totals.get("scan partition rows", [0.0])[0]
        serialised = totals.get("serialised bytes", [0.0])[0] / (1 << 20)
        lines.append(
            f"  rank {rank} ({sum(e[0] for e in totals.values() if e[1]):.3f} s in categories; "
            f"{int(parts)} scan partitions, {int(rows):,} rows; {serialised:.1f} MiB "
            "serialised): " + "; ".join(cells)
        )
    lines.append("  " + record["stats"].replace("\n", "\n  "))
    return "\n".join(lines)


def _one_row(this: Any, client: Any, engine: Any, runs: int) -> dict[str, Any]:
    """Warm latency of a one-row query, engine against polars; mean split per run."""
    one_row = pl.LazyFrame({"a": [1]})
    latencies = []
    this.take_totals()
    client.run(this.take_totals)
    for _ in range(runs):
        start = time.perf_counter()
        one_row.collect(engine=engine)
        latencies.append(time.perf_counter() - start)
    split = {n: e[0] / runs for n, e in this.take_totals().items()}
    ranks = client.run(this.take_totals)
    rank_s = [sum(e[0] for e in totals.values()) / runs for totals in ranks.values()]
    polars_s = [_best(1, one_row.collect) for _ in range(runs)]
    record = {
        "engine_median_s": statistics.median(latencies),
        "polars_median_s": statistics.median(polars_s),
        "client_mean_s": split,
        "rank_mean_s": rank_s,
    }
    print(
        f"one-row query, median of {runs}: DaskEngine {record['engine_median_s'] * 1e3:.2f} ms, "
        f"polars {record['polars_median_s'] * 1e3:.3f} ms; mean per run: "
        + ", ".join(f"{n} {v * 1e3:.2f} ms" for n, v in sorted(split.items()))
        + ", in the ranks "
        + ", ".join(f"{v * 1e3:.2f} ms" for v in rank_s),
        flush=True,
    )
    return record


def main(argv: Sequence[str] | None = None) -> int:
    """Profile the queries; print one block per query and the one-row latency."""
    from distributed import Client

    # Under ``python -m`` this file is ``__main__``: the workers and the timers need the module.
    from benchmarks import profile_cpu as this
    from engine.dask import DaskEngine
    from engine.local_cluster import plan_this_host

    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_cpu")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--scale-factor", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--queries", default="1,6")
    parser.add_argument("--repeat", type=int, default=2, help="best of N (after a warm-up)")
    parser.add_argument("--max-rows-per-partition", type=int)
    parser.add_argument("--target-partition-size", type=int)
    parser.add_argument("--one-row-runs", type=int, default=50)
    parser.add_argument("--no-polars", action="store_true", help="time the engine only")
    parser.add_argument("--polars-engine", default="auto", help="engine of the polars columns")
    parser.add_argument(
        "--fragment-engine", help="collect the ranks' fragments with this polars engine instead"
    )
    parser.add_argument("--json", type=Path, help="write every number here")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {"fallback_mode": "silent"}
    if args.max_rows_per_partition:
        options["max_rows_per_partition"] = args.max_rows_per_partition
    if args.target_partition_size:
        options["target_partition_size"] = args.target_partition_size
    plan = plan_this_host(args.workers)
    threads = plan.threads_per_worker_pool
    print(
        f"{args.workers} workers x {threads} threads; options {options}; polars columns: "
        f"engine={args.polars_engine}; fragments: {args.fragment_engine or 'the engine own'}",
        flush=True,
    )
    tables, sliced = scan_tables(args.data_dir), _sliced_tables(args.data_dir)
    records: dict[str, Any] = {"args": vars(args) | {"json": str(args.json)}, "queries": {}}
    with (
        benchmark_cluster(args.workers, threads, plan.memory_limit_bytes) as cluster,
        Client(cluster) as client,
        DaskEngine(dask_client=client, engine_options=options) as engine,
    ):
        if args.fragment_engine:
            client.run(this.use_fragment_engine, args.fragment_engine)
        client.run(this.install_worker)
        this.install(CLIENT_PATCHES)
        pl.LazyFrame({"a": [1]}).collect(engine=engine)  # the workers' first task
        for number in parse_query_numbers(args.queries):
            query = QUERIES[number](tables, scale_factor=args.scale_factor)
            sliced_query = QUERIES[number](sliced, scale_factor=args.scale_factor)
            query.collect(engine=engine)  # warm-up
            polars_s = polars_sliced_s = float("nan")
            if not args.no_polars:
                polars_s = _best(args.repeat, lambda q=query: q.collect(engine=args.polars_engine))
                polars_sliced_s = _best(
                    args.repeat, lambda q=sliced_query: q.collect(engine=args.polars_engine)
                )
            engine_s = float("inf")
            for _ in range(args.repeat):  # keep the breakdown of the fastest run
                client.run(this.take_totals)
                this.take_totals()
                start = time.perf_counter()
                query.collect(engine=engine)
                elapsed = time.perf_counter() - start
                if elapsed < engine_s:
                    engine_s = elapsed
                    ranks = client.run(this.take_totals)
                    totals = this.take_totals()
                    stats = str(engine.last_query_stats)
            record = {
                "polars_s": polars_s,
                "polars_sliced_s": polars_sliced_s,
                "engine_s": engine_s,
                "client": totals,
                "ranks": [ranks[address] for address in engine._workers],
                "stats": stats,
                "explain": engine.explain(query),
            }
            records["queries"][f"Q{number}"] = record
            print(_format(f"Q{number}", record), flush=True)
        if args.one_row_runs > 0:
            records["one_row"] = _one_row(this, client, engine, args.one_row_runs)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
