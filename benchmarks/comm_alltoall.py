"""alltoall throughput of the communicator next to a single-core memcpy of the same bytes.

Usage::

    python benchmarks/comm_alltoall.py                       # 2 and 4 ranks, ucxx and tcp
    python benchmarks/comm_alltoall.py --ranks 2 --transports ucxx ucxx-fast-same-host

Every rank is a worker process of a LocalCluster on this host. "per rank" bandwidth is the bytes
one rank sends to its peers in one alltoall (``(ranks - 1) * size``; it receives as many),
divided by the slowest rank's time per alltoall. memcpy is ``numpy.copyto`` of the same number
of bytes between two warm buffers on one core, measured in a worker of the same run.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from distributed import Client, LocalCluster

from engine.comm.bootstrap import communicator_for, open_communicators

KIB, MIB = 1024, 1024 * 1024
SIZES = [64 * KIB, 256 * KIB, MIB, 4 * MIB, 16 * MIB, 64 * MIB, 256 * MIB]
WARMUP_REPS = 3
MIN_REPS = 3
VARIANTS = {
    "ucxx": {"transport": "ucxx"},
    "ucxx-fast-same-host": {"transport": "ucxx", "ucxx_fast_same_host": True},
    "tcp": {"transport": "tcp"},
}


def bench_rank(comm_id: str, size: int, min_seconds: float, max_reps: int) -> float:
    """Seconds per alltoall on this rank (same repetition count on every rank)."""
    comm = communicator_for(comm_id)
    payload = np.ones(size, dtype=np.uint8)
    payloads = [payload] * comm.nranks
    for _ in range(WARMUP_REPS):  # the first exchanges of a size also wire up UCX lanes
        started = time.perf_counter()
        comm.alltoall(0, payloads)
        warm_s = time.perf_counter() - started
    slowest = max(float(bytes(x)) for x in comm.allgather(1, str(warm_s).encode()))
    reps = max(MIN_REPS, min(max_reps, math.ceil(min_seconds / max(slowest, 1e-6))))
    comm.barrier(2)
    started = time.perf_counter()
    for _ in range(reps):
        comm.alltoall(0, payloads)
    elapsed = time.perf_counter() - started
    comm.barrier(3)
    return elapsed / reps


def memcpy_seconds(nbytes: int, min_seconds: float) -> float:
    """Best time of a single-core copy of ``nbytes`` between two warm buffers."""
    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.ones(nbytes, dtype=np.uint8)
    best, spent = math.inf, 0.0
    while spent < min_seconds or best == math.inf:
        started = time.perf_counter()
        np.copyto(dst, src)
        took = time.perf_counter() - started
        best, spent = min(best, took), spent + took
    return best


def run(ranks: int, variants: list[str], sizes: list[int], min_seconds: float) -> list[dict]:
    rows = []
    with (
        LocalCluster(
            n_workers=ranks,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit=0,
        ) as cluster,
        Client(cluster) as client,
    ):
        first = sorted(client.scheduler_info()["workers"])[0]
        memcpy = {
            size: client.submit(
                memcpy_seconds, (ranks - 1) * size, min_seconds, workers=[first], pure=False
            ).result()
            for size in sizes
        }
        for variant in variants:
            group = open_communicators(client, timeout_s=120, **VARIANTS[variant])
            try:
                for size in sizes:
                    futures = [
                        client.submit(
                            bench_rank,
                            group.comm_id,
                            size,
                            min_seconds,
                            200,
                            workers=[w],
                            pure=False,
                        )
                        for w in group.worker_addresses
                    ]
                    seconds = max(client.gather(futures))
                    moved = (ranks - 1) * size
                    rows.append(
                        {
                            "ranks": ranks,
                            "transport": variant,
                            "size": size,
                            "gbps": moved / seconds / 1e9,
                            "memcpy_gbps": moved / memcpy[size] / 1e9,
                        }
                    )
                    print(_row(rows[-1]), flush=True)
            finally:
                group.close()
    return rows


def _size(nbytes: int) -> str:
    return f"{nbytes // MIB} MiB" if nbytes >= MIB else f"{nbytes // KIB} KiB"


def _row(row: dict) -> str:
    share = 100 * row["gbps"] / row["memcpy_gbps"]
    return (
        f"| {row['ranks']} | {row['transport']} | {_size(row['size'])} | {row['gbps']:.2f} "
        f"| {row['memcpy_gbps']:.2f} | {share:.0f}% |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    parser.add_argument(
        "--transports",
        nargs="+",
        default=["ucxx", "ucxx-fast-same-host", "tcp"],
        choices=sorted(VARIANTS),
    )
    parser.add_argument("--sizes-mib", type=float, nargs="+", default=[s / MIB for s in SIZES])
    parser.add_argument("--min-seconds", type=float, default=0.5)
    args = parser.parse_args()
    sizes = [int(s * MIB) for s in args.sizes_mib]
    print(
        "| ranks | transport | size per peer | alltoall GB/s per rank | memcpy GB/s | of memcpy |"
    )
    print("|---|---|---|---|---|---|")
    for ranks in args.ranks:
        run(ranks, args.transports, sizes, args.min_seconds)


if __name__ == "__main__":
    main()
