"""How much memory this node's workers may use: the job's allocation, not the node's RAM.

A job that asked Slurm for 1500 MB must not plan its workers for the node's 16 GiB: Dask would
let them grow until the kernel's OOM killer (or Slurm's cgroup) ends the job without a word.
The budget of the node is the smallest of four limits, each where it is known:

========================== ===========================================================
limit                      source
========================== ===========================================================
the node's RAM             ``psutil.virtual_memory().total``
the job's memory per node  ``SLURM_MEM_PER_NODE`` (MB; ``--mem``)
the job's memory per CPU   ``SLURM_MEM_PER_CPU`` (MB; ``--mem-per-cpu``) x ``SLURM_CPUS_ON_NODE``
the process's cgroup       cgroup v2 ``memory.max`` / v1 ``memory.limit_in_bytes``, on the
                           process's cgroup and every ancestor (Slurm limits the job's level)
========================== ===========================================================

and the workers of the node split it evenly. Reading is separate from deciding: the cgroup tree
comes from a ``root`` directory, so tests feed recorded trees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Final

__all__ = [
    "CGROUP_LAYOUTS",
    "node_memory_budget",
    "read_cgroup_memory_limit",
    "slurm_memory_limit_bytes",
]

CGROUP_LAYOUTS: Final = (
    # (is this /proc/self/cgroup line's hierarchy, mount under root, limit file)
    ("v2", "sys/fs/cgroup", "memory.max"),
    ("v1", "sys/fs/cgroup/memory", "memory.limit_in_bytes"),
)
"""Where each cgroup version keeps the memory limit of a cgroup."""

UNLIMITED_FROM_BYTES: Final = 1 << 60
"""cgroup v1 writes "no limit" as a huge number (9223372036854771712); treat these as none."""

_MB: Final = 1 << 20


def _hierarchy(line: str) -> tuple[str, PurePosixPath] | None:
    """``("v2", path)`` or ``("v1", path)`` for a memory line of ``/proc/self/cgroup``."""
    parts = line.split(":", 2)
    if len(parts) != 3:
        return None
    hierarchy_id, controllers, path = parts
    if hierarchy_id == "0" and controllers == "":
        return "v2", PurePosixPath(path.strip() or "/")
    if "memory" in controllers.split(","):
        return "v1", PurePosixPath(path.strip() or "/")
    return None


def _read_limit(path: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        text = path.read_text().strip()
        if text != "max" and int(text) < UNLIMITED_FROM_BYTES:
            return int(text)
    return None


def read_cgroup_memory_limit(root: Path = Path("/")) -> int | None:
    """The smallest memory limit on this process's cgroup and its ancestors; ``None``: none.

    ``root`` is ``/`` on a real host; tests pass a recorded tree (``proc/self/cgroup`` and the
    ``sys/fs/cgroup`` files). In a container the cgroup mount may show the process's own
    cgroup as its top directory, so the top directory's limit counts as well.
    """
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    mounts = {version: (mount, name) for version, mount, name in CGROUP_LAYOUTS}
    limits = []
    for line in lines:
        found = _hierarchy(line)
        if found is None:
            continue
        version, path = found
        mount, name = mounts[version]
        base = root / mount
        ancestors = [path, *path.parents]
        for ancestor in ancestors:
            limit = _read_limit(base / str(ancestor).lstrip("/") / name)
            if limit is not None:
                limits.append(limit)
    return min(limits, default=None)


def slurm_memory_limit_bytes(environ: Mapping[str, str]) -> int | None:
    """The job's memory on this node from Slurm's variables (MB), or ``None`` when unset.

    ``0`` (``--mem=0``: all of the node) is no limit.

    >>> slurm_memory_limit_bytes({"SLURM_MEM_PER_NODE": "1500"}) >> 20
    1500
    >>> slurm_memory_limit_bytes({"SLURM_MEM_PER_CPU": "500", "SLURM_CPUS_ON_NODE": "4"}) >> 20
    2000
    >>> slurm_memory_limit_bytes({"SLURM_MEM_PER_NODE": "0"}) is None
    True
    """
    limits = []
    per_node = environ.get("SLURM_MEM_PER_NODE", "")
    if per_node.isdigit() and int(per_node) > 0:
        limits.append(int(per_node) * _MB)
    per_cpu, cpus = environ.get("SLURM_MEM_PER_CPU", ""), environ.get("SLURM_CPUS_ON_NODE", "")
    if per_cpu.isdigit() and int(per_cpu) > 0 and cpus.isdigit():
        limits.append(int(per_cpu) * int(cpus) * _MB)
    return min(limits, default=None)


def node_memory_budget(
    total_memory_bytes: int, environ: Mapping[str, str], cgroup_limit_bytes: int | None
) -> int:
    """Memory the workers of this node may use together: the smallest known limit.

    >>> node_memory_budget(16 << 30, {"SLURM_MEM_PER_NODE": "1500"}, 8 << 30) >> 20
    1500
    >>> node_memory_budget(16 << 30, {}, 4 << 30) >> 30
    4
    """
    limits = [total_memory_bytes, slurm_memory_limit_bytes(environ), cgroup_limit_bytes]
    return min(limit for limit in limits if limit is not None)
