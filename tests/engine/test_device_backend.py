"""The device backend's glue, on real Dask clusters, with a CPU stand-in for cudf-polars.

cudf-polars needs a GPU (``pytest -m gpu`` runs the real one: tests/tpch/test_gpu_runner.py).
Here ``tests/engine/gpu_standin`` has its module paths and calls, and workers are given
``CUDA_VISIBLE_DEVICES`` as the preload would: what is checked is ours, the choice of backend,
the options handed over, refusals and their fallback, stats, explain, sinks and teardown.
"""

from __future__ import annotations

import _thread
import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from distributed import Client, LocalCluster
from polars.testing import assert_frame_equal

from engine.comm.base import PeerFailedError
from engine.dask import DaskEngine

pytestmark = pytest.mark.timeout(180)

STANDIN = Path(__file__).resolve().parent / "gpu_standin"
LF = pl.LazyFrame({"k": [1, 2, 1, 3], "v": [10, 20, 30, 40]})
REFUSED = LF.select(pl.col("v").map_elements(lambda x: hash(x) + 1, return_dtype=pl.Int64))


@contextlib.contextmanager
def _gpu_looking_cluster() -> Iterator[Client]:
    """Two workers that look like GPU workers: a GPU assigned (the stand-in on ``sys.path``)."""
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        host="127.0.0.1",
        memory_limit="2GiB",
        env={"CUDA_VISIBLE_DEVICES": "0"},
    )
    client = Client(cluster)
    client.wait_for_workers(2, timeout=60)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


@pytest.fixture(scope="module")
def gpu_client() -> Iterator[Client]:
    """Two workers that look like GPU workers: a GPU assigned, cudf-polars importable."""
    sys.path.insert(0, str(STANDIN))  # spawned workers take this process's sys.path
    try:
        with _gpu_looking_cluster() as client:
            yield client
    finally:
        sys.path.remove(str(STANDIN))
        for name in [m for m in sys.modules if m == "cudf_polars" or m.startswith("cudf_polars.")]:
            del sys.modules[name]


def _bootstrapped(client: Client) -> list:
    from cudf_polars.engine.dask import bootstrapped

    return list(client.run(bootstrapped).values())


def test_gpu_workers_get_the_device_backend_with_the_options_handed_over(gpu_client):
    config = {"qualname": "rmm.mr.CudaAsyncMemoryResource", "options": {"release_threshold": 1}}
    options = {"memory_resource_config": config, "max_rows_per_partition": 5}
    with DaskEngine(dask_client=gpu_client, engine_options=options) as engine:
        assert engine._device is not None
        settings = _bootstrapped(gpu_client)
        assert len(settings) == 2
        for setting in settings:
            assert setting["memory_resource"] == "rmm.mr.CudaAsyncMemoryResource"
            assert setting["binding_enabled"] is False  # ours binds; theirs must not again
            assert setting["executor_options"]["fallback_mode"] == "warn"
            assert setting["executor_options"]["max_rows_per_partition"] == 5
            assert "target_partition_size" not in setting["executor_options"]  # not set by us
        infos = engine.gather_cluster_info()
        assert [i.memory_resource for i in infos] == ["rmm.mr.CudaAsyncMemoryResource"] * 2
        got = LF.group_by("k").agg(pl.sum("v")).sort("k").collect(engine=engine)
        assert_frame_equal(got, LF.group_by("k").agg(pl.sum("v")).sort("k").collect())
        assert engine.last_query_stats.stages[0].operation.startswith("device:")
        assert engine.last_query_stats.stages[0].rows_out == 3
        assert engine.explain(LF).startswith("engine: device-resident on 2 GPU rank(s)")
        assert "STANDIN PHYSICAL PLAN" in engine.explain(LF)
        assert engine.execute(LF).n_rows_total == 4
    assert _bootstrapped(gpu_client) == [None, None]  # shut down on every rank


def test_a_refused_query_runs_on_the_cpu_executor_under_fallback_mode(gpu_client):
    expected = REFUSED.collect()
    with DaskEngine(dask_client=gpu_client, engine_options={"fallback_mode": "warn"}) as engine:
        with pytest.warns(UserWarning, match="cudf-polars cannot run .*Python UDF"):
            assert_frame_equal(REFUSED.collect(engine=engine), expected)
        text = engine.explain(REFUSED)
        assert text.startswith("engine: CPU executor on 2 rank(s); cudf-polars refuses")
    raising = DaskEngine(dask_client=gpu_client, engine_options={"fallback_mode": "raise"})
    with raising, pytest.raises(NotImplementedError, match="cannot run this query on the GPU"):
        REFUSED.collect(engine=raising)


def test_a_device_sink_writes_one_staged_part(gpu_client, tmp_path):
    with DaskEngine(dask_client=gpu_client) as engine:
        LF.sink_parquet(tmp_path / "out", engine=engine)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["part.0.0.parquet"]
    assert_frame_equal(pl.read_parquet(tmp_path / "out"), LF.collect())


def test_ucxx_is_refused_on_gpu_workers_and_cpu_can_be_chosen(gpu_client):
    with pytest.raises(ValueError, match="transport='ucxx' cannot be used on GPU workers"):
        DaskEngine(dask_client=gpu_client, engine_options={"transport": "ucxx"})
    with DaskEngine(dask_client=gpu_client, engine_options={"fragment_engine": "cpu"}) as engine:
        assert engine._device is None
        assert LF.select(pl.sum("v")).collect(engine=engine).item() == 100


def test_a_mixed_cluster_runs_on_the_cpu_under_auto_with_a_warning(gpu_client):
    addresses = list(gpu_client.ncores())
    gpu_client.run(_drop_gpu, workers=addresses[:1])
    try:
        with pytest.warns(UserWarning, match="1 of 2 workers could run on their GPU"):
            engine = DaskEngine(dask_client=gpu_client)
        with engine:
            assert engine._device is None
        with pytest.raises(RuntimeError, match=f"worker {addresses[0]}: no GPU assigned"):
            DaskEngine(dask_client=gpu_client, engine_options={"fragment_engine": "gpu"})
    finally:
        gpu_client.run(_give_gpu, workers=addresses[:1])


def _drop_gpu() -> None:
    import os

    os.environ.pop("CUDA_VISIBLE_DEVICES", None)


def _give_gpu() -> None:
    import os

    os.environ["CUDA_VISIBLE_DEVICES"] = "0"


@pytest.fixture
def own_gpu_client(gpu_client) -> Iterator[Client]:
    """A two-worker GPU-looking cluster of the test's own: these tests kill or wedge ranks.

    Depends on ``gpu_client`` for the stand-in on ``sys.path``.
    """
    with _gpu_looking_cluster() as client:
        yield client


def _wait_until_running(hold: Path, count: int) -> None:
    """Until ``count`` workers have started the held query (each writes ``hold.<pid>``)."""
    deadline = time.monotonic() + 30
    while len(list(hold.parent.glob(f"{hold.name}.*"))) < count:
        assert time.monotonic() < deadline, "the held query never reached the workers"
        time.sleep(0.02)


def test_a_killed_gpu_worker_raises_peer_failed_error_naming_its_rank(own_gpu_client, tmp_path):
    from cudf_polars.engine.dask import hold_queries

    hold = tmp_path / "hold"
    hold.touch()
    with DaskEngine(dask_client=own_gpu_client) as engine:
        assert engine._device is not None
        own_gpu_client.run(hold_queries, str(hold))
        pids = own_gpu_client.run(os.getpid)
        victim = engine._workers[1]
        outcome: dict[str, BaseException | float] = {}

        def collect() -> None:
            started = time.monotonic()
            try:
                LF.collect(engine=engine)
            except BaseException as error:
                outcome["error"] = error
            outcome["seconds"] = time.monotonic() - started

        thread = threading.Thread(target=collect)
        thread.start()
        _wait_until_running(hold, 2)
        os.kill(pids[victim], signal.SIGKILL)
        thread.join(timeout=30)
        assert not thread.is_alive(), "collect() still waits for a killed rank"
        assert isinstance(outcome["error"], PeerFailedError), outcome
        assert f"rank 1's worker {victim}" in str(outcome["error"])
        with pytest.raises(PeerFailedError, match="create a new DaskEngine"):
            LF.collect(engine=engine)
        hold.unlink()  # the surviving rank's query ends; the engine closes without waiting


def test_ctrl_c_returns_at_once_and_the_next_query_follows_the_interrupted_one(
    own_gpu_client, tmp_path
):
    from cudf_polars.engine.dask import hold_queries

    hold = tmp_path / "hold"
    hold.touch()
    with DaskEngine(dask_client=own_gpu_client) as engine:
        own_gpu_client.run(hold_queries, str(hold))

        def interrupt_when_running() -> None:
            _wait_until_running(hold, 2)
            _thread.interrupt_main()

        threading.Thread(target=interrupt_when_running, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            LF.collect(engine=engine)
        assert engine._device.busy  # cudf-polars cannot cancel: the ranks go on
        hold.unlink()  # the interrupted query ends; the next one is not held (no file)
        got = LF.group_by("k").agg(pl.sum("v")).sort("k").collect(engine=engine)
        assert_frame_equal(got, LF.group_by("k").agg(pl.sum("v")).sort("k").collect())
        assert not engine._device.busy
