"""``python -m preload.topology``: print the binding plan of this node, one row per GPU.

For admins checking a node before a run: it reads the same sysfs and NVML as the workers and
plans one worker per visible GPU (``CUDA_VISIBLE_DEVICES``, else every GPU NVML reports),
sharing CPUs the way :func:`engine.hardware_binding.bind_workers` will.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from preload.binding import BindingPlan, plan_bindings
from preload.cpulist import format_cpulist, parse_cpulist
from preload.gpus import visible_gpu_ids
from preload.nvml import NvmlSource, recording_of
from preload.record import record_sysfs_tree
from preload.sysfs import allowed_cpus_of_this_process, read_nics, read_online_cpus
from preload.worker import nvml_source, view_of_gpu

__all__ = ["format_table", "main", "plan_node"]

_COLUMNS = ("gpu", "pci", "name", "memory", "numa", "cpus", "threads", "nics", "nic affinity")


def plan_node(
    sysfs_root: str | Path,
    nvml: NvmlSource,
    environ: Mapping[str, str],
    allowed_cpus: frozenset[int],
) -> list[BindingPlan]:
    """Plans for one worker per visible GPU of the node, in ``CUDA_VISIBLE_DEVICES`` order."""
    devices = nvml.devices()
    nics = read_nics(sysfs_root)
    views = [
        view_of_gpu(
            gpu_id,
            key=gpu_id,
            host="this node",
            sysfs_root=sysfs_root,
            devices=devices,
            allowed_cpus=allowed_cpus,
            nics=nics,
        )
        for gpu_id in visible_gpu_ids(environ, len(devices))
    ]
    plans = plan_bindings(views)
    return [plans[view.key] for view in views]


def _row(plan: BindingPlan) -> tuple[str, ...]:
    gpu = dict(plan.gpu or {})
    memory = f"{gpu['memory_bytes'] / 2**30:.0f} GiB" if "memory_bytes" in gpu else "-"
    nics = ",".join(nic.name for nic in plan.nics) or "-"
    return (
        str(gpu.get("id", "-")),
        str(gpu.get("pci_bus_id", "-")),
        str(gpu.get("name", "-")),
        memory,
        "-" if plan.numa_node is None else str(plan.numa_node),
        format_cpulist(plan.cpus) or "-",
        str(len(plan.cpus)),
        nics,
        plan.nic_affinity or "-",
    )


def format_table(plans: Sequence[BindingPlan]) -> str:
    """Aligned text table; problems follow the table, one line per GPU."""
    rows = [_COLUMNS, *(_row(plan) for plan in plans)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    lines += [
        f"GPU {dict(plan.gpu or {}).get('id', '?')}: {plan.problem}"
        for plan in plans
        if plan.problem
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m preload.topology",
        description=(
            "Print this node's hardware binding plan: per visible GPU the CPUs (GPU-local CPUs "
            "of this task's cpuset, shared fairly between the GPUs of a NUMA node), the NUMA "
            "node and the nearest NICs by PCIe path. Exit status 1 when a GPU cannot be placed."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--sysfs-root", default="/sys", help="sysfs to read (a recorded tree for offline checks)"
    )
    parser.add_argument(
        "--nvml-json", default=None, help="NVML recording to use instead of the live driver"
    )
    parser.add_argument(
        "--record-nvml",
        default=None,
        metavar="FILE",
        help="also write the GPUs NVML reports as a JSON recording (for --nvml-json, tests)",
    )
    parser.add_argument(
        "--record-sysfs",
        default=None,
        metavar="FILE",
        help="also write the sysfs files this plan reads as a tree file (a test fixture)",
    )
    parser.add_argument(
        "--cpus",
        default=None,
        help="allowed CPUs, e.g. 0-55 (default: this process's cpuset; with --sysfs-root other "
        "than /sys, the tree's online CPUs)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Print the plan; return 1 when any GPU has a problem, else 0."""
    args = _parser().parse_args(argv)
    if args.cpus is not None:
        allowed = parse_cpulist(args.cpus)
    elif Path(args.sysfs_root).resolve() == Path("/sys"):
        allowed = allowed_cpus_of_this_process()
    else:
        allowed = read_online_cpus(args.sysfs_root)
    nvml = nvml_source(args.nvml_json)
    if args.record_nvml is not None:
        recording = json.dumps(recording_of(nvml.devices()), indent=1)
        Path(args.record_nvml).write_text(recording + "\n")
    plans = plan_node(args.sysfs_root, nvml, os.environ, allowed)
    if args.record_sysfs is not None:
        header = f"recorded from {args.sysfs_root} on {socket.gethostname()} ({nvml.describe()})"
        bus_ids = [device.pci_bus_id for device in nvml.devices()]
        tree = record_sysfs_tree(args.sysfs_root, bus_ids, header)
        Path(args.record_sysfs).write_text(tree)
    if args.json:
        print(json.dumps([plan.as_record() for plan in plans], indent=2))
    elif not plans:
        print(f"no GPU visible ({nvml.describe()}): workers on this node run as CPU workers")
    else:
        print(
            f"sysfs: {args.sysfs_root}  GPUs: {nvml.describe()}  allowed CPUs: "
            f"{format_cpulist(allowed)}"
        )
        print(format_table(plans))
    return 1 if any(plan.problem for plan in plans) else 0


if __name__ == "__main__":
    sys.exit(main())
