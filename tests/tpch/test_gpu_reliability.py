"""GPU workers keep the reliability promises of CPU workers (``pytest -m gpu``, issue 14).

On the device backend cudf-polars runs each query with one blocking ``Client.run``; these tests
check what is built around it on a real GPU: device memory stays flat over 200 queries, a
killed rank gives ``PeerFailedError`` instead of a hang, Ctrl-C gives the prompt back, and the
default ``engine="gpu"`` and a ``DaskEngine`` follow each other in one process. Two ranks share
the GPU, so that device shuffles run even on a one-GPU machine. ``POLARS_HPC_GPU_TEST_SF``
picks the scale factor (the lent machine runs SF1; the default is the CI data's 0.01).
"""

from __future__ import annotations

import _thread
import importlib.util
import os
import signal
import threading
import time

import polars as pl
import pytest

from benchmarks.tpch import gpu
from benchmarks.tpch.compare import assert_same_result
from benchmarks.tpch.data import ensure_tpch_data, scan_tables
from benchmarks.tpch.queries import ORDER_BY, QUERIES
from engine.comm.base import PeerFailedError
from preload.gpus import nvml_device_count

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(600)]

FLAT_GROWTH_BYTES = 256 << 20
"""Device memory the second half of the settled queries may hold above the first half."""


@pytest.fixture(scope="module")
def tables() -> dict[str, pl.LazyFrame]:
    if nvml_device_count() == 0:
        pytest.skip("no NVIDIA GPU visible through NVML")
    if importlib.util.find_spec("cudf_polars") is None:
        pytest.skip("cudf-polars is not installed: the [gpu] extra")
    return scan_tables(ensure_tpch_data(float(os.environ.get("POLARS_HPC_GPU_TEST_SF", "0.01"))))


def _device_used_bytes() -> int:
    """Memory in use on every GPU of the machine, as the driver reports it."""
    import pynvml

    pynvml.nvmlInit()
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(nvml_device_count())]
        return sum(int(pynvml.nvmlDeviceGetMemoryInfo(h).used) for h in handles)
    finally:
        pynvml.nvmlShutdown()


def _wait_until_busy(engine) -> None:
    deadline = time.monotonic() + 60
    while not (engine._device is not None and engine._device.busy):
        assert time.monotonic() < deadline, "no device query started"
        time.sleep(0.005)


def test_200_queries_keep_device_memory_flat(tables):
    queries = [QUERIES[n](tables) for n in sorted(QUERIES)]
    samples = []
    with gpu.our_engine(2) as engine:
        assert engine._device is not None
        for i in range(200):
            queries[i % len(queries)].collect(engine=engine)
            if i % 10 == 9:
                samples.append(_device_used_bytes())
    print("device memory in use every 10 queries (MiB):", [s >> 20 for s in samples])
    settled = samples[len(samples) // 4 :]
    half = len(settled) // 2
    assert max(settled[half:]) - max(settled[:half]) < FLAT_GROWTH_BYTES, samples


def test_a_killed_gpu_rank_raises_peer_failed_error(tables):
    query = QUERIES[21](tables)
    with gpu.our_engine(2) as engine:
        pids = engine.client.run(os.getpid)
        victim = engine._workers[1]
        outcome: list[BaseException] = []

        def run_until_it_fails() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    query.collect(engine=engine)
                except BaseException as error:
                    outcome.append(error)
                    return

        runner = threading.Thread(target=run_until_it_fails)
        runner.start()
        _wait_until_busy(engine)
        killed_at = time.monotonic()
        os.kill(pids[victim], signal.SIGKILL)
        runner.join(timeout=60)
        assert not runner.is_alive(), "a query still waits for the killed rank"
        print(f"PeerFailedError {time.monotonic() - killed_at:.2f} s after kill -9: {outcome}")
        assert isinstance(outcome[0], PeerFailedError), outcome
        assert f"rank 1's worker {victim}" in str(outcome[0])


def test_ctrl_c_returns_at_once_and_the_engine_answers_the_next_query(tables):
    heavy, light = QUERIES[21](tables), QUERIES[6](tables)
    with gpu.our_engine(2) as engine:

        def interrupt_when_busy() -> None:
            _wait_until_busy(engine)
            _thread.interrupt_main()

        threading.Thread(target=interrupt_when_busy, daemon=True).start()
        started = time.monotonic()

        def collect_until_interrupted() -> None:
            for _ in range(100):  # the interrupt lands in one of them
                heavy.collect(engine=engine)

        with pytest.raises(KeyboardInterrupt):
            collect_until_interrupted()
        print(f"KeyboardInterrupt after {time.monotonic() - started:.2f} s")
        assert_same_result(light.collect(engine=engine), light.collect())


def test_the_default_gpu_engine_and_a_dask_engine_follow_each_other(tables):
    query = QUERIES[3](tables)
    expected = query.collect()
    order_by = ORDER_BY[3]
    assert_same_result(query.collect(engine="gpu"), expected, order_by=order_by)
    with gpu.our_engine(2) as engine:
        assert engine._device is not None
        assert_same_result(query.collect(engine=engine), expected, order_by=order_by)
    assert_same_result(query.collect(engine="gpu"), expected, order_by=order_by)
