"""Record the sysfs files the topology reader uses, as a tree file tests can replay.

``python -m preload.topology --record-sysfs node.tree`` on a real node writes every file and
symlink :mod:`preload.sysfs` reads for that node's GPUs and NICs, in the format of
``tests/preload/fixtures/*/sysfs.tree``: ``path = content`` for a file, ``path -> target`` for a
relative symlink, paths relative to the sysfs root. A recorded node becomes a test fixture.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from preload.cpulist import parse_cpulist
from preload.sysfs import pci_function_of

__all__ = ["record_sysfs_tree"]


class _Recorder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.real_root = root.resolve()
        self.lines: list[str] = []
        self.seen: set[str] = set()

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.real_root))

    def file(self, path: Path) -> None:
        if not path.is_file():
            return
        real = path.parent.resolve() / path.name
        self._add(f"{self._relative(real)} = {path.read_text().strip()}")

    def link(self, path: Path) -> Path:
        real = path.parent.resolve() / path.name
        self._add(f"{self._relative(real)} -> {os.readlink(path)}")
        return path.resolve()

    def _add(self, line: str) -> None:
        if line not in self.seen:
            self.seen.add(line)
            self.lines.append(line)

    def pci(self, bdf: str) -> None:
        device = self.link(self.root / "bus" / "pci" / "devices" / bdf)
        for name in ("numa_node", "local_cpulist"):
            self.file(device / name)

    def netdev(self, link: Path) -> None:
        real = self.link(link)
        device = real / "device"
        if device.is_symlink():
            self.link(device)
            bdf = pci_function_of(self.root, device)
            if bdf is not None:
                self.pci(bdf)
        for name in ("operstate", "dev_port"):
            self.file(real / name)


def record_sysfs_tree(sysfs_root: str | Path, gpu_bus_ids: Iterable[str], header: str) -> str:
    """The tree file for ``sysfs_root``: CPUs, the GPUs at ``gpu_bus_ids``, every NIC."""
    recorder = _Recorder(Path(sysfs_root))
    root = recorder.root
    cpu_dir = root / "devices" / "system" / "cpu"
    recorder.file(cpu_dir / "online")
    for cpu in sorted(parse_cpulist((cpu_dir / "online").read_text())):
        recorder.file(cpu_dir / f"cpu{cpu}" / "topology" / "thread_siblings_list")
    for bdf in gpu_bus_ids:
        recorder.pci(bdf)
    infiniband = root / "class" / "infiniband"
    for link in sorted(infiniband.iterdir()) if infiniband.is_dir() else []:
        real = recorder.link(link)
        recorder.pci(recorder.link(real / "device").name)
        for port in sorted((real / "ports").iterdir(), key=lambda p: int(p.name)):
            recorder.file(port / "state")
            recorder.file(port / "link_layer")
    net = root / "class" / "net"
    for link in sorted(net.iterdir()) if net.is_dir() else []:
        recorder.netdev(link)
    comments = [f"# {line}" for line in header.splitlines()]
    return "\n".join([*comments, *recorder.lines]) + "\n"
