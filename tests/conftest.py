"""Shared fixtures: real local Dask clusters, started once per size and reused across tests.

Also the CI gate on skips: with ``CI=true`` a skip fails the run unless its reason is missing
hardware (:data:`HARDWARE_SKIP_REASONS`). A missing package, command or root privilege on a CI
machine is a broken CI, and a skip would hide it behind a green run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from typing import Final

import pytest
from distributed import Client, LocalCluster

# The tests' frames are small enough for the client fast path (StreamingOptions
# .client_fast_path_bytes); they are here to test the ranks, so it is off unless a test sets it.
os.environ.setdefault("POLARS_HPC_CLIENT_FAST_PATH_BYTES", "0")

HARDWARE_SKIP_REASONS: Final = tuple(
    re.compile(pattern)
    for pattern in (
        r"no NVIDIA GPU\b",  # "no NVIDIA GPU visible through NVML"
        r"needs \d+ NVIDIA GPUs\b",  # "needs 2 NVIDIA GPUs with a driver; NVML finds 1"
        r"fewer than \d+ (NVIDIA )?GPUs\b",
        r"needs (a node with )?\d+ (or more )?CPUs\b",  # "needs 2 CPUs to split"
        r"needs \d+ GiB of free memory\b",  # a payload test sized beyond the machine
        r"needs several (real )?hosts\b",
        # A docstring whose every example is ``+SKIP`` (STYLE.md: only for code that needs a
        # running cluster, Slurm or a GPU): the doctest item reports as skipped.
        r"all tests skipped by \+SKIP option$",
    )
)
"""Skip reasons CI accepts, matched at the start of the reason: hardware the machine lacks."""


@pytest.fixture(scope="session")
def dask_client_of_size() -> Iterator[Callable[[int], Client]]:
    """Give a client of a real LocalCluster with ``n`` single-threaded worker processes.

    Clusters are cached per size for the session: starting one costs about a second on the
    2-core CI machine, and most tests only read from them. Each call waits until all ``n``
    workers are connected: a loaded machine can return from ``LocalCluster`` before the last
    worker registered (CI once opened a 3-rank group on the 4-worker cluster), and a nanny
    restarting a worker leaves a gap as well.
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
        client = clusters[n_workers][1]
        client.wait_for_workers(n_workers, timeout=60)
        return client

    yield get
    for cluster, client in clusters.values():
        client.close()
        cluster.close()


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped test or module gave, without pytest's ``Skipped: `` prefix."""
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def is_hardware_skip(reason: str) -> bool:
    """Whether ``reason`` says the machine lacks hardware (the only skips CI accepts).

    >>> is_hardware_skip("no NVIDIA GPU visible through NVML")
    True
    >>> is_hardware_skip("duckdb is in the [bench] extra")
    False
    """
    return any(pattern.match(reason) for pattern in HARDWARE_SKIP_REASONS)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Under ``CI=true``, fail the run for every skip that is not missing hardware.

    Runs before the terminal summary, with every test and collection report in the terminal
    reporter's ``skipped`` list (doctests of ``engine/``, ``launcher/``, ... included).
    """
    if os.environ.get("CI", "").lower() not in ("true", "1"):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = [] if reporter is None else reporter.stats.get("skipped", [])
    unexplained = [
        (report.nodeid, reason)
        for report in skipped
        if not is_hardware_skip(reason := skip_reason(report))
    ]
    if not unexplained:
        return
    reporter.write_sep("=", "skips CI does not accept (CI=true)", red=True, bold=True)
    for nodeid, reason in unexplained:
        reporter.write_line(f"{nodeid}: {reason}")
    reporter.write_line(
        f"{len(unexplained)} skip(s) above are not missing hardware: install the package or "
        "command, or run as root, so that these tests run (tests/conftest.py lists the "
        "accepted reasons)"
    )
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
