"""The worker side of hardware binding: report what the worker sees, then apply its plan.

Both functions run inside each worker through ``client.run`` (see
:func:`engine.hardware_binding.bind_workers`); the plan between them is decided on the client by
:func:`preload.binding.plan_bindings`, because fair CPU shares need every worker of a host.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from preload.apply import (
    MPOL_PREFERRED,
    MemoryPolicyUnavailable,
    get_memory_policy,
    process_affinity,
    set_preferred_numa_node,
    set_process_affinity,
    size_thread_pools,
)
from preload.assign import LOCAL_INDEX_ENV
from preload.binding import BindingPlan, WorkerView
from preload.nvml import (
    GpuDevice,
    GpuNotFoundError,
    LiveNvml,
    NvmlSource,
    RecordedNvml,
    resolve_gpu,
)
from preload.policy import HardwareBindingPolicy
from preload.ranks import RRUN_VARIABLES
from preload.sysfs import (
    NicPort,
    allowed_cpus_of_this_process,
    read_core_siblings,
    read_nics,
    read_pci_device,
)

__all__ = [
    "BINDING_ATTRIBUTE",
    "BindingError",
    "apply_on_worker",
    "nvml_source",
    "probe_worker",
    "view_of_gpu",
    "worker_slot",
]

logger = logging.getLogger("preload")

BINDING_ATTRIBUTE = "polars_hpc_binding"
"""Attribute of the dask ``Worker`` holding its applied binding (``gather_cluster_info``)."""

PINNING_PLUGIN_PREFIXES = ("CPUAffinity",)
"""Worker plugins (by name or class) of outer launchers that already pin the worker: dask-cuda's
``CPUAffinity``, registered without a name, appears as ``CPUAffinity-<uuid>``."""


class BindingError(RuntimeError):
    """A worker could not be bound as planned (raised when ``raise_on_fail=True``)."""


def nvml_source(recording: str | os.PathLike[str] | None) -> NvmlSource:
    """The live driver, or a JSON recording when one is named (tests, offline checks)."""
    return LiveNvml() if recording is None else RecordedNvml.from_file(recording)


def view_of_gpu(
    gpu_id: str,
    *,
    key: str,
    host: str,
    sysfs_root: str | Path,
    devices: Sequence[GpuDevice],
    allowed_cpus: frozenset[int],
    nics: tuple[NicPort, ...],
    slot: str = "",
) -> WorkerView:
    """Read where GPU ``gpu_id`` sits; a problem (unknown GPU, missing sysfs) is reported."""
    try:
        gpu = resolve_gpu(gpu_id, devices)
        pci = read_pci_device(sysfs_root, gpu.device.pci_bus_id)
    except (GpuNotFoundError, OSError, ValueError) as error:
        return WorkerView(
            key, host, {"id": gpu_id}, None, allowed_cpus, problem=str(error), slot=slot
        )
    return WorkerView(
        key,
        host,
        gpu.as_record(),
        pci,
        allowed_cpus,
        siblings=read_core_siblings(sysfs_root, pci.local_cpus & allowed_cpus),
        nics=nics,
        slot=slot,
    )


def worker_slot(dask_worker: Any) -> str:
    """``host/local index`` of a worker: the same for the process its nanny restarts."""
    index = os.environ.get(LOCAL_INDEX_ENV, str(dask_worker.name))
    return f"{socket.gethostname()}/{index}"


def _skip_reason(dask_worker: Any, environ: Mapping[str, str]) -> str | None:
    for name in RRUN_VARIABLES:
        if name in environ:
            return f"started by rrun ({name} is set), which binds its processes itself"
    plugins = getattr(dask_worker, "plugins", {}) or {}
    pinned = [
        name
        for name, plugin in plugins.items()
        if str(name).startswith(PINNING_PLUGIN_PREFIXES)
        or type(plugin).__name__.startswith(PINNING_PLUGIN_PREFIXES)
    ]
    if pinned:
        return f"already pinned by an outer launcher (worker plugin {pinned[0]})"
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or not visible.strip():
        return "no GPU assigned (a CPU worker)"
    return None


def probe_worker(
    dask_worker: Any,
    sysfs_root: str = "/sys",
    nvml_recording: str | None = None,
) -> WorkerView:
    """Run in a worker: its GPU, that GPU's PCI placement, its allowed CPUs, the node's NICs."""
    environ = os.environ
    key, host, slot = dask_worker.address, socket.gethostname(), worker_slot(dask_worker)
    allowed = allowed_cpus_of_this_process()
    skip = _skip_reason(dask_worker, environ)
    if skip is not None:
        return WorkerView(key, host, None, None, allowed, skip=skip, slot=slot)
    gpu_id = environ["CUDA_VISIBLE_DEVICES"].split(",")[0].strip()
    try:
        nics = read_nics(sysfs_root)
    except (OSError, ValueError) as error:
        problem = f"NICs: {error}"
        return WorkerView(key, host, {"id": gpu_id}, None, allowed, problem=problem, slot=slot)
    return view_of_gpu(
        gpu_id,
        key=key,
        host=host,
        sysfs_root=sysfs_root,
        devices=nvml_source(nvml_recording).devices(),
        allowed_cpus=allowed,
        nics=nics,
        slot=slot,
    )


def _apply(plan: BindingPlan, policy: HardwareBindingPolicy, record: dict[str, Any]) -> None:
    """Apply and read back; raises :class:`BindingError` on a mismatch."""
    if policy.cpu:
        set_process_affinity(plan.cpus)
        wrong = {tid: cpus for tid, cpus in process_affinity().items() if cpus != plan.cpus}
        if wrong:
            raise BindingError(f"threads {sorted(wrong)} kept other CPUs after sched_setaffinity")
        record["threads_env"] = size_thread_pools(os.environ, len(plan.cpus))
    record["memory_policy"] = _apply_memory_policy(plan, policy)
    if policy.network and plan.ucx_net_devices:
        os.environ["UCX_NET_DEVICES"] = plan.ucx_net_devices
    else:
        record["ucx_net_devices"] = None


def _apply_memory_policy(plan: BindingPlan, policy: HardwareBindingPolicy) -> str:
    if not policy.memory:
        return "off (HardwareBindingPolicy.memory=False)"
    if plan.numa_node is None:
        return "skipped: the GPU's PCI device reports no NUMA node"
    try:
        set_preferred_numa_node(plan.numa_node)
        mode, nodes = get_memory_policy()
    except MemoryPolicyUnavailable as error:
        logger.info("polars-hpc binding: memory policy skipped: %s", error)
        return f"skipped: set_mempolicy not permitted here ({error})"
    if (mode, nodes) != (MPOL_PREFERRED, frozenset({plan.numa_node})):
        raise BindingError(f"memory policy reads back as mode {mode} nodes {sorted(nodes)}")
    return f"preferred node {plan.numa_node}"


def apply_on_worker(
    dask_worker: Any,
    plans: Mapping[str, BindingPlan],
    policy: HardwareBindingPolicy,
) -> dict[str, Any]:
    """Run in a worker: apply its plan, verify it, record it as ``worker.polars_hpc_binding``.

    A skipped worker is left alone. A failure raises :class:`BindingError` when
    ``policy.raise_on_fail``, else logs a warning; it never binds to another GPU's resources.
    """
    plan = plans[dask_worker.address]
    record = {**plan.as_record(), "applied": False, "reason": plan.skip}
    try:
        if plan.problem is not None:
            raise BindingError(plan.problem)
        if plan.skip is None:
            _apply(plan, policy, record)
            record["applied"] = True
    except (BindingError, OSError) as error:
        record["reason"] = f"binding failed: {error}"
        if policy.raise_on_fail:
            setattr(dask_worker, BINDING_ATTRIBUTE, record)
            raise BindingError(f"worker {dask_worker.address}: {error}") from error
        logger.warning("polars-hpc binding of worker %s: %s", dask_worker.address, error)
    setattr(dask_worker, BINDING_ATTRIBUTE, record)
    return record
