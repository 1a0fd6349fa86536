"""DaskEngine's lifecycle and the user guide's examples that need no GPU."""

from __future__ import annotations

import os
import threading

import polars as pl
import psutil
import pytest
from distributed import Client, LocalCluster
from polars.testing import assert_frame_equal

from engine.dask import DaskEngine
from engine.hardware_binding import HardwareBindingPolicy
from engine.options import StreamingOptions

pytestmark = pytest.mark.timeout(120)


def _query(lf: pl.LazyFrame) -> pl.LazyFrame:
    return lf.filter(pl.col("amount") > 100).group_by("customer_id").agg(pl.col("amount").sum())


@pytest.fixture
def orders(tmp_path):
    frame = pl.DataFrame(
        {"customer_id": [i % 7 for i in range(1000)], "amount": [float(i) for i in range(1000)]}
    )
    for part in range(3):
        frame[part * 300 : (part + 1) * 300 + 100 * (part == 2)].write_parquet(
            tmp_path / f"part-{part}.parquet"
        )
    return tmp_path / "*.parquet"


def test_default_engine_runs_the_user_guide_query(orders):
    with DaskEngine() as engine:
        result = _query(pl.scan_parquet(orders)).collect(engine=engine)
    expected = _query(pl.scan_parquet(orders)).collect()
    assert_frame_equal(result, expected, check_row_order=False)


def test_from_options(orders):
    """The user guide's example; ``num_streaming_threads`` sizes each worker's polars pool."""
    opts = StreamingOptions(num_streaming_threads=8, fallback_mode="silent")
    with DaskEngine.from_options(opts, n_workers=1) as engine:
        assert engine.options.num_streaming_threads == 8
        assert engine.options.fallback_mode == "silent"
        result = pl.scan_parquet(orders).collect(engine=engine)
        pools = engine.client.run(pl.thread_pool_size)
    assert_frame_equal(result, pl.scan_parquet(orders).collect())
    assert list(pools.values()) == [8], pools


def _polars_max_threads() -> str | None:
    """The worker's own variable (``client.run(os.environ.get, ...)`` ships the client's)."""
    return os.environ.get("POLARS_MAX_THREADS")


def test_num_streaming_threads_sizes_the_pools_of_a_given_cluster():
    """Workers that have not run polars yet get a pool of exactly that size, bound or not."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit="1GiB",
        ) as cluster,
        Client(cluster) as client,
        DaskEngine(dask_client=client, engine_options={"num_streaming_threads": 3}) as engine,
    ):
        assert pl.LazyFrame({"a": [1, 2]}).select(pl.sum("a")).collect(engine=engine).item() == 3
        pools = client.run(pl.thread_pool_size)
        variables = client.run(_polars_max_threads)
    assert list(pools.values()) == [3, 3], pools
    assert list(variables.values()) == ["3", "3"], variables


def test_num_streaming_threads_a_running_pool_cannot_take_is_refused(dask_client_of_size):
    """polars sizes its pool once: a worker whose pool already runs says so and names the fix."""
    client = dask_client_of_size(1)
    before = client.run(pl.thread_pool_size)  # the pool runs now, at the cluster's 1 thread
    with pytest.raises(ValueError, match=r"num_streaming_threads=3 cannot take effect") as error:
        DaskEngine(dask_client=client, engine_options={"num_streaming_threads": 3})
    assert "POLARS_MAX_THREADS=3" in str(error.value)
    assert client.run(pl.thread_pool_size) == before
    assert set(client.run(_polars_max_threads).values()) == {"1"}


def test_bring_your_own_client_is_left_alone(dask_client_of_size, orders):
    dc = dask_client_of_size(2)
    workers_before = set(dc.scheduler_info()["workers"])
    with DaskEngine(dask_client=dc) as engine:
        assert engine.nranks == 2
        result = pl.scan_parquet(orders).collect(engine=engine)
    assert_frame_equal(result, pl.scan_parquet(orders).collect())
    assert dc.status == "running"
    assert set(dc.scheduler_info()["workers"]) == workers_before
    assert dc.submit(sum, [1, 2], pure=False).result() == 3


def test_byo_client_with_address_like_the_user_guide(dask_client_of_size):
    address = dask_client_of_size(1).scheduler.address
    with Client(address) as dc, DaskEngine(dask_client=dc) as engine:
        assert pl.LazyFrame({"a": [1]}).collect(engine=engine).item() == 1


def test_hardware_binding_policy_accepted(dask_client_of_size):
    policy = HardwareBindingPolicy(enabled=False)
    with DaskEngine(
        dask_client=dask_client_of_size(1), engine_options={"hardware_binding": policy}
    ) as engine:
        assert engine.options.hardware_binding == policy


def test_gather_cluster_info_in_rank_order(dask_client_of_size):
    with DaskEngine(dask_client=dask_client_of_size(2)) as engine:
        infos = engine.gather_cluster_info()
    assert [info.rank for info in infos] == [0, 1]
    for info in infos:
        assert info["hostname"] == info.hostname
        assert info["pid"] == info.pid
        assert info.cuda_visible_devices is None
        assert info.gpu_uuid is None
        assert info.cpu_affinity
        assert info.memory_limit > 0
    assert len({info.pid for info in infos}) == 2


def test_memory_limit_is_shared_not_duplicated():
    total = psutil.virtual_memory().total
    with DaskEngine(n_workers=2) as engine:
        limits = [info.memory_limit for info in engine.gather_cluster_info()]
    assert limits == [total // 2, total // 2]


def test_no_processes_or_threads_left_behind():
    with DaskEngine(n_workers=1):  # warm-up: distributed keeps a few process-wide threads
        pass
    threads_before = {t.ident for t in threading.enumerate()}
    children_before = set(psutil.Process().children(recursive=True))
    with DaskEngine(n_workers=2) as engine:
        pids = [info.pid for info in engine.gather_cluster_info()]
        assert set(psutil.Process().children(recursive=True)) - children_before
    assert not set(psutil.Process().children(recursive=True)) - children_before
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
    leaked = [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()]
    assert not leaked, leaked


@pytest.mark.parametrize("variable", ["RRUN_RANK", "RAPIDSMPF_RANK"])
def test_refuses_inside_rrun(monkeypatch, variable):
    monkeypatch.setenv(variable, "0")
    with pytest.raises(RuntimeError, match=f"rrun cluster \\({variable}=0"):
        DaskEngine()


def test_use_after_shutdown_raises(dask_client_of_size):
    engine = DaskEngine(dask_client=dask_client_of_size(1))
    engine.shutdown()
    engine.shutdown()  # idempotent
    with pytest.raises(RuntimeError, match="shut down"):
        pl.LazyFrame({"a": [1]}).collect(engine=engine)
    with pytest.raises(RuntimeError, match="shut down"):
        engine.gather_cluster_info()


def test_unknown_engine_option_names_the_valid_ones():
    with pytest.raises(TypeError, match="'bogus'.*valid options are: num_streaming_threads"):
        DaskEngine(engine_options={"bogus": 1})


def test_from_options_rejects_a_dict():
    with pytest.raises(TypeError, match="needs a StreamingOptions"):
        DaskEngine.from_options({"fallback_mode": "warn"})
