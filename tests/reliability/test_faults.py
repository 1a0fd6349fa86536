"""Faults during a query: a killed worker, Ctrl-C in the client, a rank that fails alone.

Each test runs on a cluster of its own with a short communicator timeout. UDFs from
``fault_udfs`` leave marker files, so a test acts at a known point of the query (every rank
inside its first fragment, its peers about to enter the shuffle) instead of after a guessed sleep.
"""

from __future__ import annotations

import functools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import polars as pl
import pytest
from distributed import Client
from polars.testing import assert_frame_equal

from engine.comm.base import PeerFailedError
from engine.dask import DaskEngine
from engine.hardware_binding import HardwareBindingPolicy

pytestmark = pytest.mark.timeout(120)

COMM_TIMEOUT_S = 5.0
NO_BINDING = HardwareBindingPolicy(enabled=False)
HERE = Path(__file__).parent


def held_group_by(fault_udfs: ModuleType, marker_dir: Path) -> pl.LazyFrame:
    """A shuffle whose input fragments hold until ``marker_dir/release`` exists."""
    hold = functools.partial(fault_udfs.hold_until_released, marker_dir=str(marker_dir))
    return (
        pl.LazyFrame({"k": [i % 5 for i in range(60)], "a": list(range(60))})
        .with_columns(pl.col("a").map_batches(hold, is_elementwise=True, return_dtype=pl.Int64))
        .group_by("k")
        .agg(pl.col("a").sum())
    )


def small_query() -> pl.LazyFrame:
    return pl.LazyFrame({"k": [1, 2, 1, 3], "v": [1, 2, 3, 4]}).group_by("k").agg(pl.sum("v"))


def collect_in_thread(lf: pl.LazyFrame, engine: DaskEngine) -> tuple[threading.Thread, dict]:
    """Collect in a thread; ``outcome`` gets ``result`` or ``error``, and ``ended_at``.

    ``ended_at`` (``time.monotonic()`` as ``collect`` returned or raised) times the query
    itself: the test thread's own wake-up from ``join`` is not counted.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = lf.collect(engine=engine)
        except BaseException as error:
            outcome["error"] = error
        finally:
            outcome["ended_at"] = time.monotonic()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def wait_until_idle(client: Client, timeout_s: float = 30.0) -> float:
    """Seconds until no task runs on any worker (the query's ranks all stopped)."""
    start = time.monotonic()
    while any(client.processing().values()):
        assert time.monotonic() - start < timeout_s, f"still running: {client.processing()}"
        time.sleep(0.05)
    return time.monotonic() - start


def test_worker_killed_mid_shuffle_names_the_rank_within_the_timeout(
    own_cluster, fault_udfs, tmp_path
):
    client = own_cluster(3)
    engine = DaskEngine(
        dask_client=client,
        engine_options={"comm_timeout_s": COMM_TIMEOUT_S, "hardware_binding": NO_BINDING},
    )
    thread, outcome = collect_in_thread(held_group_by(fault_udfs, tmp_path), engine)
    fault_udfs.wait_for_markers(tmp_path, "started.*", 3)
    victim = client.run(os.getpid)[engine._workers[2]]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    (tmp_path / "release").touch()  # ranks 0 and 1 go on into the shuffle with rank 2
    thread.join(COMM_TIMEOUT_S + 30)
    assert not thread.is_alive(), (
        f"collect still waits {time.monotonic() - killed_at:.1f} s after a worker died"
    )
    elapsed_s = outcome["ended_at"] - killed_at
    error = outcome.get("error")
    assert isinstance(error, PeerFailedError), outcome
    assert re.search(r"\brank 2\b", str(error)), str(error)
    assert elapsed_s < COMM_TIMEOUT_S + 5, (
        f"collect raised {elapsed_s:.2f} s after the kill (bound {COMM_TIMEOUT_S + 5} s)"
    )
    print(f"killed rank 2 -> {type(error).__name__} after {elapsed_s:.2f} s: {error}")

    with pytest.raises(PeerFailedError, match="rank 2's worker .* create a new DaskEngine"):
        small_query().collect(engine=engine)
    engine.shutdown()

    client.wait_for_workers(3, timeout=60)  # the nanny restarted the killed worker
    with DaskEngine(dask_client=client, engine_options={"hardware_binding": NO_BINDING}) as fresh:
        got = small_query().collect(engine=fresh)
    assert_frame_equal(got, small_query().collect(), check_row_order=False)


def test_a_rank_failing_alone_stops_every_rank_with_its_error(dask_client_of_size):
    client = dask_client_of_size(2)
    # A long timeout: the other rank must stop because it is told, not because it times out.
    engine = DaskEngine(
        dask_client=client, engine_options={"comm_timeout_s": 120, "hardware_binding": NO_BINDING}
    )
    values = ["1", "2", "3", "4", "5", "x"]  # only rank 1's half holds the bad value
    query = (
        pl.LazyFrame({"a": values})
        .with_columns(pl.col("a").cast(pl.Int64))
        .group_by("a")
        .agg(pl.len())
    )
    with pytest.raises(pl.exceptions.InvalidOperationError) as polars_error:
        pl.LazyFrame({"a": values[3:]}).with_columns(pl.col("a").cast(pl.Int64)).collect()
    start = time.monotonic()
    with pytest.raises(type(polars_error.value), match=re.escape(str(polars_error.value))):
        query.collect(engine=engine)
    failed_s = time.monotonic() - start
    idle_s = wait_until_idle(client)
    assert failed_s + idle_s < 60, (  # far below the 120 s timeout
        f"the query failed after {failed_s:.1f} s, the ranks were idle {idle_s:.1f} s later"
    )
    assert_frame_equal(
        small_query().collect(engine=engine), small_query().collect(), check_row_order=False
    )
    engine.shutdown()


INTERRUPTED_CLIENT = HERE / "interrupted_client.py"


def test_ctrl_c_cancels_the_query_on_the_workers_and_the_engine_goes_on(fault_udfs, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.getcwd()])}
    process = subprocess.Popen(
        [sys.executable, str(INTERRUPTED_CLIENT), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        fault_udfs.wait_for_markers(tmp_path, "started.*", 2)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    print(stdout)
    assert process.returncode == 0, stderr[-3000:]
    assert "KeyboardInterrupt reached the caller" in stdout
    assert "ranks that got past the shuffle: 0" in stdout
    assert "next query: correct" in stdout
