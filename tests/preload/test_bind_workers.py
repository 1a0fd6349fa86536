"""``bind_workers`` on a real LocalCluster, with the topology of a recorded DGX H100.

The workers get fake GPU ids from the preload, read the recorded sysfs tree and NVML JSON, and
apply the plan for real on this machine (affinity, memory policy, env), then read it back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from distributed import Client, LocalCluster, WorkerPlugin

from engine.cluster_info import describe_this_worker
from engine.hardware_binding import HardwareBindingPolicy, bind_workers
from preload.apply import set_process_affinity
from preload.worker import BindingError

FIXTURES = Path(__file__).parent / "fixtures"
DGX_NVML = str(FIXTURES / "dgx_h100" / "nvml.json")

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to split"),
]


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    """Two workers that the preload gives DGX GPUs 0 and 1 (both on NUMA node 0)."""
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit="500MiB",
            preload_nanny=["preload"],
            env={"POLARS_HPC_GPU_IDS": "0,1"},
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def unbound(client: Client) -> Iterator[Client]:
    """Give each test workers with their original affinity and no binding record."""
    original = sorted(os.sched_getaffinity(0))

    def reset(dask_worker: Any) -> None:
        set_process_affinity(original)
        os.environ.pop("UCX_NET_DEVICES", None)
        dask_worker.__dict__.pop("polars_hpc_binding", None)

    client.run(reset)
    yield client
    client.run(reset)


def worker_state(dask_worker: Any) -> dict[str, Any]:
    return {
        "gpu": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "affinity": sorted(os.sched_getaffinity(0)),
        "ucx": os.environ.get("UCX_NET_DEVICES"),
        "polars_max_threads": os.environ.get("POLARS_MAX_THREADS"),
        "omp": os.environ.get("OMP_NUM_THREADS"),
        "binding": getattr(dask_worker, "polars_hpc_binding", None),
    }


def by_gpu(client: Client) -> dict[str, dict[str, Any]]:
    return {state["gpu"]: state for state in client.run(worker_state).values()}


def test_binding_applied_and_read_back(unbound: Client, machine: Callable[[str], Path]) -> None:
    sysfs = str(machine("dgx_h100"))
    low, high = sorted(os.sched_getaffinity(0))[:2]
    records = bind_workers(
        unbound, HardwareBindingPolicy(), sysfs_root=sysfs, nvml_recording=DGX_NVML
    )
    assert {r["applied"] for r in records.values()} == {True}, records
    state = by_gpu(unbound)
    for gpu, cpu, nic in (("0", low, "mlx5_0:1,ibp24s0"), ("1", high, "mlx5_3:1,ibp64s0")):
        binding = state[gpu]["binding"]
        assert state[gpu]["affinity"] == [cpu]
        assert state[gpu]["ucx"] == nic
        assert state[gpu]["polars_max_threads"] == state[gpu]["omp"] == "1"
        assert binding["cpus"] == [cpu]
        assert binding["numa_node"] == 0
        assert binding["nics"] == [nic.split(",")[0]]
        assert binding["ucx_net_devices"] == nic
        assert binding["polars_threads"] == binding["polars_threads_actual"] == 1
        assert binding["gpu"] == {
            "id": gpu,
            "index": int(gpu),
            "uuid": f"GPU-6c1f0a3e-4b1d-4e2a-9c7d-00000000000{gpu}",
            "name": "NVIDIA H100 80GB HBM3",
            "memory_bytes": 85520809984,
            "pci_bus_id": ["0000:1b:00.0", "0000:43:00.0"][int(gpu)],
        }
        assert binding["reason"] is None
        assert binding["memory_policy"] == "preferred node 0" or binding[
            "memory_policy"
        ].startswith("skipped: set_mempolicy not permitted here")
    infos = unbound.run(describe_this_worker).values()
    assert sorted(info["numa_node"] for info in infos) == [0, 0]


def test_worker_restarted_by_its_nanny_is_bound_again(
    unbound: Client, machine: Callable[[str], Path]
) -> None:
    sysfs = str(machine("dgx_h100"))
    records = bind_workers(
        unbound, HardwareBindingPolicy(), sysfs_root=sysfs, nvml_recording=DGX_NVML
    )
    planned = {r["gpu"]["id"]: r["cpus"] for r in records.values()}
    old = {state["gpu"]: address for address, state in unbound.run(worker_state).items()}
    unbound.restart_workers([old["0"]])
    unbound.wait_for_workers(2, timeout=60)
    state = {s["gpu"]: (address, s) for address, s in unbound.run(worker_state).items()}
    address, restarted = state["0"]
    assert address != old["0"]
    assert restarted["affinity"] == planned["0"]
    assert restarted["binding"]["applied"] is True
    assert restarted["binding"]["polars_threads_actual"] == len(planned["0"])
    assert state["1"][0] == old["1"]


def test_network_off_leaves_ucx_alone(unbound: Client, machine: Callable[[str], Path]) -> None:
    sysfs = str(machine("dgx_h100"))
    policy = HardwareBindingPolicy(network=False)
    bind_workers(unbound, policy, sysfs_root=sysfs, nvml_recording=DGX_NVML)
    assert [s["ucx"] for s in by_gpu(unbound).values()] == [None, None]
    assert [s["binding"]["ucx_net_devices"] for s in by_gpu(unbound).values()] == [None, None]


def test_cpu_and_memory_parts_can_be_turned_off(
    unbound: Client, machine: Callable[[str], Path]
) -> None:
    before = by_gpu(unbound)
    policy = HardwareBindingPolicy(cpu=False, memory=False)
    bind_workers(unbound, policy, sysfs_root=str(machine("dgx_h100")), nvml_recording=DGX_NVML)
    after = by_gpu(unbound)
    for gpu in ("0", "1"):
        assert after[gpu]["affinity"] == before[gpu]["affinity"]
        assert after[gpu]["binding"]["applied"] is True
        assert after[gpu]["binding"]["memory_policy"] == "off (HardwareBindingPolicy.memory=False)"
        assert "threads_env" not in after[gpu]["binding"]
        assert after[gpu]["ucx"] == after[gpu]["binding"]["ucx_net_devices"]


def test_disabled_policy_does_nothing(unbound: Client, machine: Callable[[str], Path]) -> None:
    before = by_gpu(unbound)
    policy = HardwareBindingPolicy(enabled=False)
    assert bind_workers(unbound, policy, sysfs_root=str(machine("dgx_h100"))) == {}
    assert by_gpu(unbound) == before


def test_failure_warns_and_binds_nothing(unbound: Client, machine: Callable[[str], Path]) -> None:
    """DGX GPUs on a Grace Hopper sysfs: no PCI device to read, so no worker is bound (and none
    falls back to some other GPU's CPUs)."""
    sysfs = str(machine("grace_hopper"))
    before = by_gpu(unbound)
    records = bind_workers(
        unbound,
        HardwareBindingPolicy(),
        sysfs_root=sysfs,
        nvml_recording=str(FIXTURES / "dgx_h100" / "nvml.json"),
    )
    assert {r["applied"] for r in records.values()} == {False}
    state = by_gpu(unbound)
    for gpu in ("0", "1"):
        assert state[gpu]["affinity"] == before[gpu]["affinity"]
        assert state[gpu]["binding"]["reason"].startswith("binding failed: PCI device 0000:")
        assert state[gpu]["binding"]["cpus"] == []


def test_raise_on_fail(unbound: Client, machine: Callable[[str], Path]) -> None:
    with pytest.raises(BindingError, match="is not in .*bus/pci/devices"):
        bind_workers(
            unbound,
            HardwareBindingPolicy(raise_on_fail=True),
            sysfs_root=str(machine("grace_hopper")),
            nvml_recording=DGX_NVML,
        )


class CPUAffinity(WorkerPlugin):
    """Stands in for dask-cuda's plugin of the same name (only its name is looked at)."""


def test_worker_pinned_by_dask_cuda_is_skipped(
    unbound: Client, machine: Callable[[str], Path]
) -> None:
    unbound.register_plugin(CPUAffinity())
    try:
        records = bind_workers(
            unbound,
            HardwareBindingPolicy(raise_on_fail=True),
            sysfs_root=str(machine("dgx_h100")),
            nvml_recording=DGX_NVML,
        )
    finally:
        unbound.unregister_worker_plugin(next(iter(unbound.run(plugin_names).values())))
    assert [r["applied"] for r in records.values()] == [False, False]
    assert {r["reason"].split(" (")[0] for r in records.values()} == {
        "already pinned by an outer launcher"
    }


def plugin_names(dask_worker: Any) -> str:
    return next(name for name in dask_worker.plugins if name.startswith("CPUAffinity"))


def test_dask_engine_binds_and_reports(unbound: Client) -> None:
    """Fake GPU ids on this GPU-less machine: the engine's binding fails softly and says why."""
    from engine.dask import DaskEngine

    with DaskEngine(dask_client=unbound) as engine:
        infos = engine.gather_cluster_info()
    assert [info.binding["applied"] for info in infos] == [False, False]
    assert (
        infos[0]
        .binding["reason"]
        .startswith("binding failed: CUDA_VISIBLE_DEVICES entry '0' names no GPU of this node")
    )


def test_num_streaming_threads_sizes_a_bound_workers_pool(machine: Callable[[str], Path]) -> None:
    """``polars_threads`` (``num_streaming_threads``) wins over one thread per bound CPU.

    A cluster of its own: the module's workers started their pools in earlier tests.
    """
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address=":0",
            memory_limit="500MiB",
            preload_nanny=["preload"],
            env={"POLARS_HPC_GPU_IDS": "0,1"},
        ) as cluster,
        Client(cluster) as fresh,
    ):
        records = bind_workers(
            fresh,
            HardwareBindingPolicy(),
            polars_threads=3,
            sysfs_root=str(machine("dgx_h100")),
            nvml_recording=DGX_NVML,
        )
        pools = fresh.run(pl.thread_pool_size)
    assert {r["applied"] for r in records.values()} == {True}, records
    assert [len(r["cpus"]) for r in records.values()] == [1, 1], records
    threads = [(r["polars_threads"], r["polars_threads_actual"]) for r in records.values()]
    assert threads == [(3, 3), (3, 3)], records
    assert list(pools.values()) == [3, 3], pools
