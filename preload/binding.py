"""Decide each worker's binding from what the workers saw: pure data in, plans out.

One worker per GPU (or MIG instance). Its CPUs are the GPU's local CPUs that its task may use,
split into disjoint, near-equal shares (whole cores first) among the workers on the same host
whose candidates are the same CPUs - typically the GPUs of one NUMA node. Its NICs are the
nearest by PCIe path: the deepest common ancestor of the two devices' sysfs paths, as
``nvidia-smi topo -m`` ranks them (PIX/PXB, PHB, NODE, SYS).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from preload.cpulist import format_cpulist
from preload.sysfs import NicPort, PciDevice

__all__ = [
    "NIC_AFFINITY_NAMES",
    "BindingPlan",
    "WorkerView",
    "nearest_nics",
    "plan_bindings",
    "split_fairly",
]

NIC_AFFINITY_NAMES: Final = {3: "pcie", 2: "host-bridge", 1: "numa", 0: "system"}
"""How close a NIC is, best first: below one PCIe bridge (nvidia-smi PIX/PXB), same host bridge
(PHB), same NUMA node (NODE), across the system interconnect (SYS)."""


@dataclass(frozen=True)
class WorkerView:
    """What one worker reported about itself (read in the worker, decided on the client)."""

    key: str
    host: str
    gpu: Mapping[str, Any] | None
    pci: PciDevice | None
    allowed_cpus: frozenset[int]
    siblings: Mapping[int, frozenset[int]] = field(default_factory=dict)
    nics: tuple[NicPort, ...] = ()
    problem: str | None = None
    skip: str | None = None
    slot: str = ""
    """``host/local index``: names the worker's place across restarts (its address changes)."""


@dataclass(frozen=True)
class BindingPlan:
    """The binding one worker should get.

    ``skip`` says why a worker is rightly left alone (a CPU worker, ``rrun``, dask-cuda);
    ``problem`` why one cannot be bound as it should (a failure).
    """

    key: str
    gpu: Mapping[str, Any] | None
    cpus: frozenset[int] = frozenset()
    numa_node: int | None = None
    nics: tuple[NicPort, ...] = ()
    nic_affinity: str | None = None
    sharing: int = 1
    problem: str | None = None
    skip: str | None = None

    @property
    def ucx_net_devices(self) -> str:
        """``UCX_NET_DEVICES`` for the nearest NICs (RDMA port and netdev), or ``""``."""
        names = [name for nic in self.nics for name in nic.ucx_names]
        return ",".join(dict.fromkeys(names))

    def as_record(self) -> dict[str, Any]:
        """Plain data (what the worker records and ``python -m preload.topology`` prints)."""
        return {
            "gpu": dict(self.gpu) if self.gpu else None,
            "cpus": sorted(self.cpus),
            "cpulist": format_cpulist(self.cpus),
            "numa_node": self.numa_node,
            "nics": [nic.name for nic in self.nics],
            "nic_affinity": self.nic_affinity,
            "ucx_net_devices": self.ucx_net_devices,
            "polars_threads": len(self.cpus),
            "workers_sharing_cpus": self.sharing,
            "problem": self.problem,
            "skip": self.skip,
        }


def _common_prefix(a: Sequence[str], b: Sequence[str]) -> int:
    depth = 0
    for left, right in zip(a, b, strict=False):
        if left != right:
            break
        depth += 1
    return depth


def _nic_rank(gpu: PciDevice, nic: PciDevice) -> tuple[int, int]:
    """Sort key, larger is nearer: (affinity class, depth of the common PCIe ancestor)."""
    depth = _common_prefix(gpu.path[:-1], nic.path[:-1])
    if depth >= 2:
        return 3, depth
    if depth == 1:
        return 2, depth
    same_node = gpu.numa_node is not None and gpu.numa_node == nic.numa_node
    return (1 if same_node else 0), 0


def nearest_nics(gpu: PciDevice, nics: Sequence[NicPort]) -> tuple[tuple[NicPort, ...], str | None]:
    """The NICs that share the deepest PCIe ancestor with ``gpu``, and how close they are."""
    if not nics:
        return (), None
    ranks = {nic.name: _nic_rank(gpu, nic.pci) for nic in nics}
    best = max(ranks.values())
    return tuple(nic for nic in nics if ranks[nic.name] == best), NIC_AFFINITY_NAMES[best[0]]


def split_fairly(
    cpus: frozenset[int], siblings: Mapping[int, frozenset[int]], parts: int
) -> list[frozenset[int]]:
    """Split ``cpus`` into ``parts`` disjoint, contiguous shares, whole cores where possible.

    Shares differ by at most one core. With fewer CPUs than parts, no split can be disjoint:
    part ``i`` gets CPU ``i mod n`` (the plan reports the sharing).

    >>> siblings = {c: frozenset({c % 4, c % 4 + 4}) for c in range(8)}
    >>> [sorted(s) for s in split_fairly(frozenset(range(8)), siblings, 2)]
    [[0, 1, 4, 5], [2, 3, 6, 7]]
    """
    ordered = sorted(cpus)
    cores = sorted(
        {frozenset(siblings.get(cpu, frozenset({cpu})) & cpus) | {cpu} for cpu in ordered},
        key=min,
    )
    units = cores if len(cores) >= parts else [frozenset({cpu}) for cpu in ordered]
    if len(units) < parts:
        return [frozenset({ordered[i % len(ordered)]}) for i in range(parts)]
    share, extra = divmod(len(units), parts)
    shares: list[frozenset[int]] = []
    start = 0
    for part in range(parts):
        end = start + share + (1 if part < extra else 0)
        shares.append(frozenset().union(*units[start:end]))
        start = end
    return shares


def _order_key(view: WorkerView) -> tuple[int, str, str]:
    gpu = view.gpu or {}
    return int(gpu.get("index", -1)), str(gpu.get("uuid", "")), view.key


def plan_bindings(views: Sequence[WorkerView]) -> dict[str, BindingPlan]:
    """Plan every worker; workers of one host with the same candidate CPUs split them."""
    plans: dict[str, BindingPlan] = {}
    groups: dict[tuple[str, frozenset[int]], list[WorkerView]] = defaultdict(list)
    for view in views:
        if view.skip is not None:
            plans[view.key] = BindingPlan(view.key, view.gpu, skip=view.skip)
            continue
        if view.problem is not None or view.pci is None:
            problem = view.problem or "the worker reported no PCI device for its GPU"
            plans[view.key] = BindingPlan(view.key, view.gpu, problem=problem)
            continue
        candidates = view.pci.local_cpus & view.allowed_cpus
        if not candidates:
            plans[view.key] = BindingPlan(
                view.key,
                view.gpu,
                numa_node=view.pci.numa_node,
                problem=(
                    f"none of this task's CPUs ({format_cpulist(view.allowed_cpus)}) is local "
                    f"to GPU {view.pci.bdf} (local CPUs {format_cpulist(view.pci.local_cpus)}); "
                    "give the task CPUs of the GPU's socket (e.g. srun --cpu-bind, "
                    "--gpu-bind=closest) or disable CPU binding"
                ),
            )
            continue
        groups[(view.host, candidates)].append(view)
    for (_host, candidates), members in groups.items():
        members.sort(key=_order_key)
        shares = split_fairly(candidates, members[0].siblings, len(members))
        for view, share in zip(members, shares, strict=True):
            assert view.pci is not None
            nics, affinity = nearest_nics(view.pci, view.nics)
            plans[view.key] = BindingPlan(
                view.key,
                view.gpu,
                cpus=share,
                numa_node=view.pci.numa_node,
                nics=nics,
                nic_affinity=affinity,
                sharing=len(members),
            )
    return plans
