"""Shared fixtures: real local Dask clusters, started once per size and reused across tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from distributed import Client, LocalCluster


@pytest.fixture(scope="session")
def dask_client_of_size() -> Iterator[Callable[[int], Client]]:
    """Give a client of a real LocalCluster with ``n`` single-threaded worker processes.

    Clusters are cached per size for the session: starting one costs about a second on the
    2-core CI machine, and most tests only read from them.
    """
    clusters: dict[int, tuple[LocalCluster, Client]] = {}

    def get(n_workers: int) -> Client:
        if n_workers not in clusters:
            cluster = LocalCluster(
                n_workers=n_workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=":0",
                host="127.0.0.1",
                memory_limit="2GiB",
                env={"POLARS_MAX_THREADS": "1"},
            )
            clusters[n_workers] = (cluster, Client(cluster))
        return clusters[n_workers][1]

    yield get
    for cluster, client in clusters.values():
        client.close()
        cluster.close()
