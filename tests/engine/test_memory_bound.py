"""A one-rank query whose input is over its worker's budget finishes in stages and passes.

A real one-worker LocalCluster with a small memory limit: the query's input is over the spill
budget (a quarter of the limit), so the rank plans it in stages and aggregates and joins in
passes written to the worker's local directory. The answer is polars' own; the stage records
show the bytes the passes wrote; the nanny never restarts the worker.
"""

from __future__ import annotations

import polars as pl
import pytest
from distributed import Client, LocalCluster
from polars.testing import assert_frame_equal

from engine.dask import DaskEngine

pytestmark = pytest.mark.timeout(180)

ROWS = 12_000_000
MEMORY_LIMIT = 1024 * 1024 * 1024


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> str:
    """192 MB in memory (two Int64 columns), read twice: over a quarter of the worker's 1 GiB.

    A worker with polars, distributed and UCXX loaded is about 250 MiB before it reads any.
    """
    path = str(tmp_path_factory.mktemp("lines") / "lines.parquet")
    index = pl.int_range(ROWS, eager=True)
    pl.DataFrame({"order": index // 4, "supplier": (index * 7919) % 1000}).write_parquet(path)
    return path


def test_a_query_over_the_workers_budget_finishes_in_passes(lines):
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
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
            host="127.0.0.1",
            memory_limit=MEMORY_LIMIT,
            env={"POLARS_MAX_THREADS": "1"},
        ) as cluster,
        Client(cluster) as client,
        DaskEngine(dask_client=client, engine_options={"fallback_mode": "raise"}) as engine,
    ):
        worker = next(iter(client.scheduler_info()["workers"]))
        assert_frame_equal(query.collect(engine=engine), query.collect())
        stats = engine.last_query_stats
        assert stats is not None
        assert sum(stage.bytes_spilled for stage in stats.stages) >= ROWS * 16
        assert list(client.scheduler_info()["workers"]) == [worker]
