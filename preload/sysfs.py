"""Read the parts of sysfs that place a GPU: its PCI device, the node's NICs, the CPU cores.

Only reading happens here; :mod:`preload.binding` decides. Every function takes the sysfs root,
so tests read recorded trees (``tests/preload/fixtures``) exactly as they would read ``/sys``.
Device paths are resolved through sysfs' own symlinks (``bus/pci/devices/<bdf>`` points into
``devices/pci0000:15/0000:15:01.0/...``): the path *is* the PCIe hierarchy.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from preload.cpulist import parse_cpulist

__all__ = [
    "NicPort",
    "PciDevice",
    "allowed_cpus_of_this_process",
    "pci_function_of",
    "read_core_siblings",
    "read_nics",
    "read_online_cpus",
    "read_pci_device",
]


@dataclass(frozen=True)
class PciDevice:
    """A PCI function and where it sits: ``path`` runs from the root complex down to it."""

    bdf: str
    path: tuple[str, ...]
    local_cpus: frozenset[int]
    numa_node: int | None


@dataclass(frozen=True)
class NicPort:
    """A network port UCX can use; ``name`` is what ``UCX_NET_DEVICES`` lists for it."""

    name: str
    netdev: str | None
    link_layer: Literal["infiniband", "ethernet"]
    pci: PciDevice

    @property
    def ucx_names(self) -> tuple[str, ...]:
        """The RDMA port and its netdev (UCX's tcp transport addresses netdevs by name)."""
        return (self.name,) if self.netdev in (None, self.name) else (self.name, self.netdev)


_BDF: Final = re.compile(r"^[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


def pci_function_of(sysfs_root: str | Path, device: Path) -> str | None:
    """The PCI function ``device`` sits on: itself, or its nearest PCI ancestor.

    A virtio NIC's ``device`` is ``.../0000:00:03.0/virtio2``: the NIC is PCI function
    ``0000:00:03.0``. ``None`` for devices outside PCI (virtual, platform).
    """
    pci_devices = Path(sysfs_root) / "bus" / "pci" / "devices"
    for part in reversed(device.resolve().parts):
        if _BDF.match(part) and (pci_devices / part).exists():
            return part
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _device_path(sysfs_root: Path, link: Path) -> tuple[str, ...]:
    """Components of ``link``'s real target below ``<root>/devices``."""
    real = link.resolve()
    try:
        return real.relative_to(sysfs_root.resolve() / "devices").parts
    except ValueError:
        raise ValueError(f"{link} resolves to {real}, outside {sysfs_root}/devices") from None


def read_pci_device(sysfs_root: str | Path, bdf: str) -> PciDevice:
    """Read one PCI function (``0000:1b:00.0``): its path, local CPUs and NUMA node.

    ``numa_node`` is ``None`` where the kernel says ``-1`` (no NUMA information).
    """
    root = Path(sysfs_root)
    link = root / "bus" / "pci" / "devices" / bdf
    if not link.exists():
        raise FileNotFoundError(
            f"PCI device {bdf} is not in {root}/bus/pci/devices; is {root} the sysfs of the "
            "node that owns the GPU (containers may need /sys mounted)?"
        )
    numa = _read(link / "numa_node")
    node = int(numa) if numa is not None and int(numa) >= 0 else None
    return PciDevice(
        bdf=bdf,
        path=_device_path(root, link),
        local_cpus=parse_cpulist(_read(link / "local_cpulist") or ""),
        numa_node=node,
    )


def _netdevs_of(device_dir: Path) -> list[Path]:
    net = device_dir / "net"
    return sorted(net.iterdir()) if net.is_dir() else []


def _infiniband_ports(root: Path) -> list[NicPort]:
    base = root / "class" / "infiniband"
    ports: list[NicPort] = []
    for ib in sorted(base.iterdir()) if base.is_dir() else []:
        device_dir = (ib / "device").resolve()
        pci = read_pci_device(root, device_dir.name)
        netdevs = _netdevs_of(device_dir)
        port_dirs = sorted((ib / "ports").iterdir(), key=lambda p: int(p.name))
        for port_dir in port_dirs:
            if not (_read(port_dir / "state") or "").endswith("ACTIVE"):
                continue
            port = int(port_dir.name)
            matching = [
                nd.name
                for nd in netdevs
                if len(port_dirs) == 1 or _read(nd / "dev_port") == str(port - 1)
            ]
            layer = (_read(port_dir / "link_layer") or "InfiniBand").lower()
            ports.append(
                NicPort(
                    name=f"{ib.name}:{port}",
                    netdev=matching[0] if matching else None,
                    link_layer="ethernet" if layer == "ethernet" else "infiniband",
                    pci=pci,
                )
            )
    return ports


def _ethernet_ports(root: Path, rdma_functions: set[str]) -> list[NicPort]:
    base = root / "class" / "net"
    ports: list[NicPort] = []
    for netdev in sorted(base.iterdir()) if base.is_dir() else []:
        device = netdev / "device"
        if not device.exists() or _read(netdev / "operstate") != "up":
            continue
        bdf = pci_function_of(root, device)
        if bdf is None or bdf in rdma_functions:
            continue
        pci = read_pci_device(root, bdf)
        ports.append(NicPort(name=netdev.name, netdev=netdev.name, link_layer="ethernet", pci=pci))
    return ports


def read_nics(sysfs_root: str | Path) -> tuple[NicPort, ...]:
    """Every usable network port of the node.

    RDMA ports (``class/infiniband/*``) count when ACTIVE; plain PCI netdevs (``class/net/*``,
    not virtual, not an RDMA device's) when ``operstate`` is ``up``.
    """
    root = Path(sysfs_root)
    rdma = _infiniband_ports(root)
    return tuple(rdma + _ethernet_ports(root, {port.pci.bdf for port in rdma}))


def read_core_siblings(sysfs_root: str | Path, cpus: Iterable[int]) -> dict[int, frozenset[int]]:
    """Each CPU's hyperthread siblings (itself alone where sysfs does not say)."""
    root = Path(sysfs_root) / "devices" / "system" / "cpu"
    siblings: dict[int, frozenset[int]] = {}
    for cpu in cpus:
        text = _read(root / f"cpu{cpu}" / "topology" / "thread_siblings_list")
        siblings[cpu] = parse_cpulist(text) if text else frozenset({cpu})
    return siblings


def read_online_cpus(sysfs_root: str | Path) -> frozenset[int]:
    """The node's online CPUs (``devices/system/cpu/online``)."""
    path = Path(sysfs_root) / "devices" / "system" / "cpu" / "online"
    text = _read(path)
    if text is None:
        raise FileNotFoundError(f"{path} is missing; is {sysfs_root} a sysfs tree?")
    return parse_cpulist(text)


def allowed_cpus_of_this_process(status_path: str | Path = "/proc/self/status") -> frozenset[int]:
    """CPUs this process may run on: its cgroup/Slurm cpuset (``Cpus_allowed_list``).

    Falls back to :func:`os.sched_getaffinity` where ``/proc`` is not mounted.
    """
    text = _read(Path(status_path)) or ""
    for line in text.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return parse_cpulist(line.partition(":")[2])
    return frozenset(os.sched_getaffinity(0))
