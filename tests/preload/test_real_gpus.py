"""On a machine with 2+ NVIDIA GPUs: one worker per GPU, each sees only its own, bound to it.

Skipped with a reason where NVML finds fewer than two GPUs. Run with
``pytest -m gpu tests/preload/test_real_gpus.py``.
"""

from __future__ import annotations

import ctypes
import os
import uuid
from pathlib import Path

import pytest

from preload.gpus import nvml_device_count
from preload.nvml import LiveNvml, resolve_gpu
from preload.sysfs import read_pci_device

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]


def gpus_or_skip() -> int:
    count = nvml_device_count()
    if count < 2:
        pytest.skip(f"needs 2 NVIDIA GPUs with a driver; NVML finds {count}")
    return count


def cuda_view_of_this_worker() -> dict[str, object]:
    """What CUDA itself shows this process (driver API via ctypes: no context is created)."""
    cuda = ctypes.CDLL("libcuda.so.1")
    assert cuda.cuInit(0) == 0
    count = ctypes.c_int(0)
    assert cuda.cuDeviceGetCount(ctypes.byref(count)) == 0
    uuids = []
    for ordinal in range(count.value):
        device = ctypes.c_int(0)
        assert cuda.cuDeviceGet(ctypes.byref(device), ordinal) == 0
        raw = (ctypes.c_char * 16)()
        assert cuda.cuDeviceGetUuid(raw, device) == 0
        uuids.append(f"GPU-{uuid.UUID(bytes=bytes(raw))}")
    visible = os.environ["CUDA_VISIBLE_DEVICES"]
    assigned = resolve_gpu(visible.split(",")[0], LiveNvml().devices())
    return {
        "visible": visible,
        "cuda_uuids": uuids,
        "nvml_uuid": assigned.device.uuid,
        "pci_bus_id": assigned.device.pci_bus_id,
        "affinity": sorted(os.sched_getaffinity(0)),
    }


def test_one_worker_per_gpu_each_sees_only_its_own_and_is_bound() -> None:
    from engine.dask import DaskEngine

    count = gpus_or_skip()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    expected = len(visible.split(",")) if visible else count
    with DaskEngine() as engine:
        assert engine.nranks == expected
        views = list(engine.client.run(cuda_view_of_this_worker).values())
        infos = engine.gather_cluster_info()
    assert sorted(v["nvml_uuid"] for v in views) == sorted({str(v["nvml_uuid"]) for v in views}), (
        "two workers got the same GPU"
    )
    for view in views:
        assert view["cuda_uuids"] == [view["nvml_uuid"]], view
    for info in infos:
        binding = dict(info.binding)
        assert binding.get("applied") is True, binding
        assert info.cpu_affinity == binding["cpus"]
        pci = read_pci_device(Path("/sys"), binding["gpu"]["pci_bus_id"])
        assert set(info.cpu_affinity) <= pci.local_cpus
        assert info.numa_node == pci.numa_node
        assert info.gpu_uuid == binding["gpu"]["uuid"]
        assert binding["polars_threads_actual"] == len(binding["cpus"])
    by_node: dict[object, list[set[int]]] = {}
    for info in infos:
        by_node.setdefault((info.hostname, info.numa_node), []).append(set(info.cpu_affinity))
    for shares in by_node.values():
        assert sum(map(len, shares)) == len(set().union(*shares)), "CPU shares overlap"
