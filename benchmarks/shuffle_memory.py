"""Peak RSS of a worker during one hash shuffle, without and with a receive budget.

Usage::

    python -m benchmarks.shuffle_memory                      # 2 ranks, 256 MiB per rank, tcp
    python -m benchmarks.shuffle_memory --mib 512 --budgets-mib 0 64 16 --transport ucxx

Every rank is a worker process of a LocalCluster on this host. A rank builds one frame per
destination (as a hash partition would; built directly, so no freed memory hides in the
allocator), then its peak RSS is reset
(``/proc/self/clear_refs``) and it runs :func:`engine.executor.exchange.shuffle` under a
:class:`SpillPolicy` with the given budget (0: no budget, nothing spills) in its worker's local
directory. The table shows, per rank, the RSS before the shuffle, the peak RSS during it and the
rise, next to the bytes received (this rank's own part included) and spilled. Both rows carry
the same sender-side memory (the partitioned frame and its serialized messages until sent);
the difference between rows is what the receive side held.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import polars as pl
from distributed import Client, LocalCluster

from benchmarks.peak_rss import reset_peak_rss, status_kib
from engine.comm.bootstrap import communicator_for, open_communicators
from engine.executor.exchange import SpillPolicy, shuffle

MIB = 1024 * 1024


def shuffle_rank(comm_id: str, mib: int, budget: int | None, tag: int) -> dict[str, float]:
    """Run one shuffle of ``mib`` MiB from this rank; report its memory numbers."""
    from distributed import get_worker

    comm = communicator_for(comm_id)
    rows = mib * MIB // 32 // comm.nranks
    rng = np.random.default_rng(comm.rank)
    outgoing = [
        pl.DataFrame(
            {
                "k": rng.integers(0, 1 << 40, rows),
                "a": rng.random(rows),
                "b": rng.integers(0, 1000, rows),
                "c": rng.random(rows),
            }
        )
        for _ in range(comm.nranks)
    ]
    directory = os.path.join(get_worker().local_directory, "shuffle-memory-bench")
    policy = SpillPolicy(directory, budget)
    comm.barrier(tag)
    reset_peak_rss()
    before = status_kib("VmRSS")
    started = time.perf_counter()
    received = shuffle(comm, tag + 1, outgoing, policy)
    seconds = time.perf_counter() - started
    peak = status_kib("VmHWM")
    rows_received = sum(f.height for f in received)
    del received, outgoing
    comm.barrier(tag + 2)
    return {
        "rank": comm.rank,
        "rss_before_mib": before / 1024,
        "peak_mib": peak / 1024,
        "peak_rise_mib": (peak - before) / 1024,
        "received_mib": policy.exchanges[-1].received_bytes / MIB,
        "spilled_mib": policy.spilled_bytes / MIB,
        "held_peak_mib": policy.peak_in_memory_bytes / MIB,
        "message_mib": policy.chunk_bytes() / MIB,
        "rows": rows_received,
        "seconds": seconds,
    }


def run_one(args: argparse.Namespace, budget_mib: int) -> list[dict[str, float]]:
    """One shuffle on a fresh cluster (a used worker's allocator hides a later peak)."""
    budget = budget_mib * MIB if budget_mib else None
    with (
        LocalCluster(
            n_workers=args.ranks,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit=0,
        ) as cluster,
        Client(cluster) as client,
    ):
        group = open_communicators(client, transport=args.transport, timeout_s=120)
        try:
            futures = [
                client.submit(
                    shuffle_rank, group.comm_id, args.mib, budget, 0, workers=[w], pure=False
                )
                for w in group.worker_addresses
            ]
            return client.gather(futures)
        finally:
            group.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--mib", type=int, default=256, help="data each rank sends, in MiB")
    parser.add_argument("--budgets-mib", type=int, nargs="+", default=[0, 16])
    parser.add_argument("--transport", default="tcp", choices=["tcp", "ucxx", "auto"])
    args = parser.parse_args()
    print(f"{args.ranks} ranks, {args.mib} MiB sent per rank, transport {args.transport}")
    print(
        "| budget | rank | RSS before | peak RSS | peak rise | received | spilled "
        "| held at most | message | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for budget_mib in args.budgets_mib:
        for row in run_one(args, budget_mib):
            label = f"{budget_mib} MiB" if budget_mib else "none"
            print(
                f"| {label} | {row['rank']} | {row['rss_before_mib']:.0f} MiB "
                f"| {row['peak_mib']:.0f} MiB | {row['peak_rise_mib']:.0f} MiB "
                f"| {row['received_mib']:.0f} MiB "
                f"| {row['spilled_mib']:.0f} MiB | {row['held_peak_mib']:.1f} MiB "
                f"| {row['message_mib']:.1f} MiB | {row['seconds']:.2f} |"
            )


if __name__ == "__main__":
    main()
