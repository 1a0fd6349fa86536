"""A query whose input is over its workers' budget finishes in stages and passes.

A real LocalCluster with a small memory limit: on one worker the query's input is over the
spill budget (a quarter of the limit), so the rank plans it in stages; on two, each rank's
share of the aggregation and the join is over half its budget, so the ranks exchange in
passes. Both aggregate and join in passes written to the workers' local directories. The
answer is polars' own; the stage records show the bytes the passes wrote; the nanny never
restarts a worker.
"""

from __future__ import annotations

import polars as pl
import pytest
from distributed import Client, LocalCluster
from polars.testing import assert_frame_equal

from engine.dask import DaskEngine

pytestmark = pytest.mark.timeout(180)

ROWS = 12_000_000
MIB = 1024 * 1024
MEMORY_LIMIT = {1: 1024 * MIB, 2: 640 * MIB}
"""By workers: one reads 192 MB twice, over a quarter of 1 GiB; each of two sends 96 MB of the
aggregation's rows, over half of a quarter of 640 MiB."""


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> str:
    """192 MB in memory (two Int64 columns), read twice: over a quarter of the worker's 1 GiB.

    A worker with polars, distributed and UCXX loaded is about 250 MiB before it reads any.
    """
    path = str(tmp_path_factory.mktemp("lines") / "lines.parquet")
    index = pl.int_range(ROWS, eager=True)
    pl.DataFrame({"order": index // 4, "supplier": (index * 7919) % 1000}).write_parquet(path)
    return path


@pytest.mark.parametrize("n_workers", [1, 2])
def test_a_query_over_the_workers_budget_finishes_in_passes(lines, n_workers):
    """One rank: in stages, then passes. Two: each rank's share is over half its budget, so
    the ranks exchange in passes too."""
    scan = pl.scan_parquet(lines)
    suppliers = scan.group_by("order").agg(pl.col("supplier").n_unique().alias("n"))
    query = (
        scan.join(suppliers.filter(pl.col("n") > 3), on="order")
        .group_by("supplier")
        .agg(pl.len())
        .sort("supplier")
    )
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            host="127.0.0.1",
            memory_limit=MEMORY_LIMIT[n_workers],
            env={"POLARS_MAX_THREADS": "1"},
        ) as cluster,
        Client(cluster) as client,
        DaskEngine(dask_client=client, engine_options={"fallback_mode": "raise"}) as engine,
    ):
        workers = sorted(client.scheduler_info()["workers"])
        assert_frame_equal(query.collect(engine=engine), query.collect())
        stats = engine.last_query_stats
        assert stats is not None
        assert sum(stage.bytes_spilled for stage in stats.stages) >= ROWS * 16
        assert sorted(client.scheduler_info()["workers"]) == workers  # none restarted
