"""``python -m launcher.info``: a table of the cluster's workers.

The same data as ``DaskEngine.gather_cluster_info()``.

Which cluster, first match wins:

1. ``--scheduler-address ADDR`` or ``--scheduler-file PATH``: a running scheduler (its workers
   are only read, never bound or changed);
2. the launcher's cluster, when run as a job's script
   (``srun ... python -m launcher.run -m launcher.info``): the scheduler address and TLS files
   come from ``dask.config`` as for any script;
3. else a local cluster started as ``DaskEngine()`` starts it (one worker per GPU, else CPU
   workers; ``--n-workers N``), bound as the engine binds it, then closed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, Final

from engine.cluster_info import WorkerInfo

__all__ = ["COLUMNS", "build_parser", "format_table", "gather_worker_info", "main"]


def _gpu(info: WorkerInfo) -> str:
    index = (info.cuda_visible_devices or "").split(",")[0].strip()
    if not index and info.gpu_uuid is None:
        return "-"
    memory = info.get("gpu_memory_bytes")
    facts = [
        index or "?",
        info.gpu_uuid or "?",
        info.get("gpu_name") or "?",
        f"{memory / 2**30:.0f} GiB" if memory else "?",
    ]
    return " ".join(facts)


def _cpus(info: WorkerInfo) -> str:
    cpus = sorted(info.cpu_affinity)
    ranges: list[str] = []
    for cpu in cpus:
        if ranges and cpu == int(ranges[-1].split("-")[-1]) + 1:
            ranges[-1] = f"{ranges[-1].split('-')[0]}-{cpu}"
        else:
            ranges.append(str(cpu))
    return ",".join(ranges) or "-"


def _or_dash(value: Any) -> str:
    return "-" if value is None or value == [] else str(value)


COLUMNS: Final[tuple[tuple[str, Callable[[WorkerInfo], str]], ...]] = (
    ("rank", lambda i: str(i.rank)),
    ("host", lambda i: i.hostname),
    ("pid", lambda i: str(i.pid)),
    ("gpu (index uuid name memory)", _gpu),
    ("cpus", _cpus),
    ("numa", lambda i: _or_dash(i.numa_node)),
    ("nics", lambda i: ",".join(i.get("nics") or []) or "-"),
    ("memory limit", lambda i: f"{i.memory_limit / 2**30:.1f} GiB" if i.memory_limit else "-"),
    ("polars threads", lambda i: _or_dash(i.get("polars_threads"))),
)
"""The table: one row per column, header and how a worker's cell reads."""


def format_table(infos: Sequence[WorkerInfo]) -> str:
    """Workers as an aligned text table, one line per worker in rank order."""
    rows = [[name for name, _ in COLUMNS]]
    rows += [[cell(info) for _, cell in COLUMNS] for info in infos]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(f"{c:<{w}}" for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m launcher.info`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m launcher.info",
        description=(
            "Print the workers of a Dask cluster: rank, host, pid, GPU, CPU affinity, NUMA "
            "node, NICs, memory limit, polars threads. Without an address: the job's cluster "
            "when run under launcher.run, else a local cluster started like DaskEngine()."
        ),
        epilog=(
            "examples:\n"
            "  python -m launcher.info --n-workers 2\n"
            "  python -m launcher.info --scheduler-address tcp://10.0.0.5:8786 --json\n"
            "  srun -N 2 --ntasks-per-node=4 python -m launcher.run -m launcher.info"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--scheduler-address", metavar="ADDR", help="scheduler to read")
    where.add_argument(
        "--scheduler-file", type=Path, metavar="PATH", help="scheduler file to read (dask's)"
    )
    parser.add_argument(
        "--n-workers",
        type=int,
        metavar="N",
        help="workers of the local cluster (default: one per GPU, else min(4, CPUs))",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _read_cluster(client: Any) -> list[WorkerInfo]:
    from engine.cluster_info import describe_this_worker, in_rank_order

    return in_rank_order(client.run(describe_this_worker).values())


def gather_worker_info(
    *,
    scheduler_address: str | None = None,
    scheduler_file: Path | None = None,
    n_workers: int | None = None,
) -> list[WorkerInfo]:
    """The workers of the chosen cluster (see the module docstring), in rank order."""
    import dask.config
    from distributed import Client

    from engine.dask import SCHEDULER_ADDRESS_CONFIG, DaskEngine

    if scheduler_address is not None or scheduler_file is not None:
        if n_workers is not None:
            raise ValueError("--n-workers applies to a local cluster; drop it with an address")
        target = {"scheduler_file": str(scheduler_file)} if scheduler_file else {}
        with Client(scheduler_address, **target) as client:
            return _read_cluster(client)
    if dask.config.get(SCHEDULER_ADDRESS_CONFIG, None):
        with Client(dask.config.get(SCHEDULER_ADDRESS_CONFIG)) as client:
            return _read_cluster(client)
    with DaskEngine(n_workers=n_workers) as engine:
        return engine.gather_cluster_info()


def _as_json(infos: Sequence[WorkerInfo]) -> str:
    return json.dumps([dict(info) | {"binding": dict(info.binding)} for info in infos], indent=2)


def main(argv: Sequence[str] | None = None, stdout: IO[str] | None = None) -> int:
    """Print the table (or JSON); exit status 0, or 2 with the reason on a bad argument."""
    args = build_parser().parse_args(argv)
    out = sys.stdout if stdout is None else stdout
    try:
        infos = gather_worker_info(
            scheduler_address=args.scheduler_address,
            scheduler_file=args.scheduler_file,
            n_workers=args.n_workers,
        )
    except (ValueError, OSError) as error:
        print(f"python -m launcher.info: error: {error}", file=sys.stderr)
        return 2
    print(_as_json(infos) if args.json else format_table(infos), file=out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
