"""Where each worker runs: one record per worker, in rank order.

The rank order is defined here once (host name, then the worker's local index, then address) and
used both by :meth:`engine.dask.DaskEngine.gather_cluster_info` and the communicator bootstrap, so
"rank 3" means the same worker everywhere.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["WorkerInfo", "describe_this_worker", "in_rank_order", "rank_order_key"]


@dataclass(frozen=True)
class WorkerInfo:
    """One worker's placement, readable as ``info.hostname`` and ``info["hostname"]``."""

    rank: int
    hostname: str
    pid: int
    address: str
    local_index: int
    cuda_visible_devices: str | None
    gpu_uuid: str | None
    cpu_affinity: list[int]
    numa_node: int | None
    memory_limit: int | None
    binding: Mapping[str, Any] = field(default_factory=dict)
    gpu_name: str | None = None
    gpu_memory_bytes: int | None = None
    nics: list[str] = field(default_factory=list)
    """Network interfaces nearest the worker's GPU (from the binding), else empty."""
    polars_threads: int | None = None
    """Size of the worker's polars thread pool (binding, else ``POLARS_MAX_THREADS``)."""
    memory_resource: str | None = None
    """RMM resource the device backend allocates from (``memory_resource_config``); ``None``
    where queries run on the CPU executor."""

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self, name)
        except AttributeError:
            raise KeyError(name) from None

    def keys(self) -> Iterator[str]:
        """Field names, so ``dict(info)`` works."""
        return iter(asdict(self))

    def get(self, name: str, default: Any = None) -> Any:
        """Like :meth:`dict.get`."""
        return getattr(self, name, default)


def rank_order_key(record: Mapping[str, Any]) -> tuple[str, int, str]:
    """Sort key that makes ranks deterministic: host, then local index, then address."""
    return (record["hostname"], record["local_index"], record["address"])


def _worker_local_index(dask_worker: Any) -> int:
    """The worker's index on its node: the launcher's rank or LocalCluster's integer name."""
    from_preload = os.environ.get("POLARS_HPC_LOCAL_INDEX")
    if from_preload is not None:
        return int(from_preload)
    name = dask_worker.name
    return name if isinstance(name, int) else int(name) if str(name).isdigit() else 0


def _gpu_facts() -> dict[str, Any]:
    """UUID, name and memory of the first GPU this process sees; ``None`` values without one."""
    facts: dict[str, Any] = {"gpu_uuid": None, "gpu_name": None, "gpu_memory_bytes": None}
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and not visible.strip():
        return facts
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return facts
    try:
        first = (visible or "0").split(",")[0].strip()
        if first.startswith(("GPU-", "MIG-")):
            facts["gpu_uuid"] = first
            handle = pynvml.nvmlDeviceGetHandleByUUID(first.encode())
        else:
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(first))
        uuid, name = pynvml.nvmlDeviceGetUUID(handle), pynvml.nvmlDeviceGetName(handle)
        facts["gpu_uuid"] = uuid.decode() if isinstance(uuid, bytes) else uuid
        facts["gpu_name"] = name.decode() if isinstance(name, bytes) else name
        facts["gpu_memory_bytes"] = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
    except Exception:
        return facts
    finally:
        pynvml.nvmlShutdown()
    return facts


def _polars_threads(binding: Mapping[str, Any]) -> int | None:
    """The pool size the binding checked, else ``POLARS_MAX_THREADS``; never starts the pool."""
    size = binding.get("polars_threads_actual") or os.environ.get("POLARS_MAX_THREADS")
    return int(size) if size else None


def _binding_as_reported(binding: Mapping[str, Any]) -> dict[str, Any]:
    """The binding record with its planned pool size named as a plan, never as the pool.

    The plan's ``polars_threads`` is the size of the CPU set it binds to: 0 for a worker it
    leaves alone (a CPU worker). Reported next to the worker's real ``polars_threads`` it read
    as a contradiction (0 beside 2), so it is ``planned_polars_threads`` here, ``None`` when the
    binding planned no CPU set.

    >>> _binding_as_reported({"cpus": [], "polars_threads": 0, "skip": "a CPU worker"})
    {'cpus': [], 'skip': 'a CPU worker', 'planned_polars_threads': None}
    >>> _binding_as_reported({"cpus": [4, 5], "polars_threads": 2})["planned_polars_threads"]
    2
    """
    reported = {key: value for key, value in binding.items() if key != "polars_threads"}
    if "polars_threads" in binding:
        reported["planned_polars_threads"] = binding["polars_threads"] or None
    return reported


def describe_this_worker(dask_worker: Any) -> dict[str, Any]:
    """Run on a worker (``client.run``): its placement as plain data; rank is filled in later."""
    binding = _binding_as_reported(getattr(dask_worker, "polars_hpc_binding", {}) or {})
    return {
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "address": dask_worker.address,
        "local_index": _worker_local_index(dask_worker),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        **_gpu_facts(),
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "numa_node": binding.get("numa_node"),
        "memory_limit": dask_worker.memory_manager.memory_limit,
        "binding": binding,
        "nics": list(binding.get("nics") or []),
        "polars_threads": _polars_threads(binding),
    }


def in_rank_order(records: Iterable[Mapping[str, Any]]) -> list[WorkerInfo]:
    """Turn per-worker records into :class:`WorkerInfo` sorted and numbered by rank."""
    ordered = sorted(records, key=rank_order_key)
    return [WorkerInfo(rank=rank, **record) for rank, record in enumerate(ordered)]
