"""Fixtures of the communicator tests: the rank task functions, shipped to workers by value."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from distributed import Client

from engine.comm.bootstrap import CommGroup, open_communicators

RANK_TASKS = Path(__file__).with_name("comm_rank_tasks.py")


@pytest.fixture(scope="session")
def rank_tasks() -> ModuleType:
    """``comm_rank_tasks.py``, importable under the same name here and on the workers.

    Tests are no package, so workers cannot import them; :func:`ship_rank_tasks` uploads the
    file (``Client.upload_file``) to every cluster a test uses.
    """
    name = RANK_TASKS.stem
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, RANK_TASKS)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


_SHIPPED: set[str] = set()


def ship_rank_tasks(client: Client) -> None:
    """Make ``comm_rank_tasks`` importable on the workers of ``client``'s cluster (once)."""
    if client.scheduler.address not in _SHIPPED:
        client.upload_file(str(RANK_TASKS))
        _SHIPPED.add(client.scheduler.address)


@pytest.fixture
def open_group() -> Iterator[Callable[..., CommGroup]]:
    """Open communicators on a client; every group opened is closed after the test."""
    groups: list[CommGroup] = []

    def open_(client: Client, transport: str, timeout_s: float = 30.0) -> CommGroup:
        ship_rank_tasks(client)
        group = open_communicators(client, transport=transport, timeout_s=timeout_s)
        groups.append(group)
        return group

    yield open_
    for group in groups:
        group.close()


def submit_ranks(client: Client, group: CommGroup, func: Callable, *args: object) -> list:
    """Submit ``func(comm_id, *args)`` once per rank, pinned to that rank's worker."""
    return [
        client.submit(func, group.comm_id, *args, workers=[address], pure=False)
        for address in group.worker_addresses
    ]


@pytest.fixture
def run_on_ranks() -> Callable[..., list]:
    """Run ``func(comm_id, *args)`` on every rank and gather the results in rank order."""

    def run(client: Client, group: CommGroup, func: Callable, *args: object) -> list:
        return client.gather(submit_ranks(client, group, func, *args))

    return run
