"""Fixtures of the reliability tests: clusters of their own (tests kill and interrupt them)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from distributed import Client, LocalCluster

HERE = Path(__file__).parent
UDFS = HERE / "fault_udfs.py"


def _import_udfs() -> ModuleType:
    """``fault_udfs`` under that name, in this process (the planner deserializes its UDFs)."""
    if "fault_udfs" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fault_udfs", UDFS)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["fault_udfs"] = module
        spec.loader.exec_module(module)
    return sys.modules["fault_udfs"]


@pytest.fixture(scope="session")
def fault_udfs() -> ModuleType:
    """The UDF module; workers of :func:`own_cluster` can import it too."""
    return _import_udfs()


@pytest.fixture
def own_cluster(fault_udfs: ModuleType) -> Iterator[Callable[[int], Client]]:
    """Start a LocalCluster only this test uses (it may kill its workers); closed after."""
    opened: list[tuple[LocalCluster, Client]] = []

    def start(n_workers: int) -> Client:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit="1GiB",
            env={"POLARS_MAX_THREADS": "1"},
        )
        client = Client(cluster)
        client.upload_file(str(UDFS))
        opened.append((cluster, client))
        return client

    yield start
    for cluster, client in opened:
        client.close()
        cluster.close(timeout=30)
