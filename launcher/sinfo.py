"""What a Slurm partition can give a job, from ``sinfo``; and whether a request fits it.

A batch job that asks for more than any node of its partition has is accepted by ``sbatch`` and
then sits PENDING (reason ``PartitionConfig``) for good; a GPU request on a partition without
GPUs is refused with a one-word ``gres`` error. :mod:`launcher.sbatch` checks its request here
first, so the user learns what does not fit, and the fix, before waiting on the queue.

Parsing and checking are pure (literal ``sinfo`` output in, messages out); only
:func:`read_sinfo_nodes` runs ``sinfo``.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "SINFO_FORMAT",
    "NodeFacts",
    "PartitionRequest",
    "check_request",
    "gpu_refusal",
    "parse_gres_gpus",
    "parse_memory_mb",
    "parse_sinfo_nodes",
    "partition_nodes",
    "read_sinfo_nodes",
]

SINFO_FORMAT: Final = "%N|%c|%m|%G|%P"
"""One line per node and partition: name, CPUs, memory (MB), generic resources, partition."""

_GRES_GPU: Final = re.compile(r"(?:^|,)gpu(?::[^:,(]+)?:(\d+)")
_MEMORY: Final = re.compile(r"^(\d+)([KMGT]?)$", re.IGNORECASE)
_MEMORY_UNIT_MB: Final = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}
"""Slurm's ``--mem`` units in MB (a bare number means MB)."""


@dataclass(frozen=True)
class NodeFacts:
    """One node of one partition, as ``sinfo -N`` reports it."""

    name: str
    cpus: int
    memory_mb: int
    gpus: int
    partition: str
    default_partition: bool


@dataclass(frozen=True)
class PartitionRequest:
    """What a job asks of every node it gets (the parts of an sbatch request ``sinfo`` knows)."""

    nodes: int
    cpus_per_node: int
    gpus_per_node: int
    memory_mb: int | None
    """``--mem`` in MB; ``None`` (not set) and ``0`` (all of the node) always fit."""
    how: Mapping[str, str]
    """The options that made each figure, for messages: ``{"cpus": "2 tasks x 8 CPUs"}``."""


def parse_gres_gpus(gres: str) -> int:
    """GPUs in a ``sinfo %G`` field (``(null)`` when the node has none).

    >>> parse_gres_gpus("gpu:a100:4(S:0-1),gpu:2")
    6
    >>> parse_gres_gpus("(null)")
    0
    """
    return sum(int(count) for count in _GRES_GPU.findall(gres))


def parse_memory_mb(text: str) -> int:
    """``--mem`` as Slurm reads it, in MB: a bare number is MB; K, M, G, T suffixes.

    >>> parse_memory_mb("16G"), parse_memory_mb("1500"), parse_memory_mb("0")
    (16384, 1500, 0)
    """
    match = _MEMORY.match(text.strip())
    if match is None:
        raise ValueError(
            f"--mem {text!r} is not a Slurm memory size: a number of MB, or with a unit "
            "K, M, G or T (e.g. 16G, 1500M); 0 asks for all of each node's memory"
        )
    return int(int(match[1]) * _MEMORY_UNIT_MB[match[2].upper()])


def parse_sinfo_nodes(text: str) -> list[NodeFacts]:
    r"""Parse ``sinfo -h -N -o '%N|%c|%m|%G|%P'``; the default partition ends in ``*``.

    >>> cn1, gn1 = parse_sinfo_nodes("cn1|8|16000|(null)|debug*\ngn1|64|512000|gpu:h100:8|gpu")
    >>> cn1.default_partition, cn1.gpus, gn1.partition, gn1.gpus, gn1.memory_mb
    (True, 0, 'gpu', 8, 512000)
    """
    nodes = []
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 5:
            continue
        name, cpus, memory, gres, partition = fields
        nodes.append(
            NodeFacts(
                name=name,
                cpus=int(cpus.rstrip("+")),
                memory_mb=int(memory.rstrip("+")),
                gpus=parse_gres_gpus(gres),
                partition=partition.rstrip("*"),
                default_partition=partition.endswith("*"),
            )
        )
    return nodes


def partition_nodes(nodes: Sequence[NodeFacts], partition: str | None) -> list[NodeFacts]:
    """The nodes of ``partition``, or of the default partition when ``None``."""
    if partition is None:
        return [node for node in nodes if node.default_partition]
    return [node for node in nodes if node.partition == partition]


def _largest(nodes: Sequence[NodeFacts], field: str) -> int:
    return max(getattr(node, field) for node in nodes)


def gpu_refusal(
    request: PartitionRequest, nodes: Sequence[NodeFacts], partition: str
) -> str | None:
    """Why ``sbatch`` will refuse the request's GPUs (no node of the partition has any), or None.

    >>> node = NodeFacts("cn1", 8, 16000, 0, "debug", True)
    >>> request = PartitionRequest(1, 8, 1, None, {"gpus": "--gpus-per-task"})
    >>> gpu_refusal(request, [node], "debug").split(":")[0]
    'partition debug has no GPUs (sinfo lists no gpu gres on its 1 node(s)), but the job asks for 1 GPU(s) per node (--gpus-per-task)'
    """  # noqa: E501
    if request.gpus_per_node == 0 or not nodes or _largest(nodes, "gpus") > 0:
        return None
    return (
        f"partition {partition} has no GPUs (sinfo lists no gpu gres on its {len(nodes)} "
        f"node(s)), but the job asks for {request.gpus_per_node} GPU(s) per node "
        f"({request.how.get('gpus', '--gpus-per-node')}): pass --partition with a GPU partition "
        "(sinfo -o '%P %G'), or --gpus-per-node 0 for the cpu-only template"
    )


def check_request(
    request: PartitionRequest, nodes: Sequence[NodeFacts], partition: str
) -> list[str]:
    """What the partition cannot give: one message per shortfall, each naming the fix.

    >>> node = NodeFacts("cn1", 8, 16000, 0, "debug", True)
    >>> request = PartitionRequest(1, 16, 0, None, {"cpus": "2 tasks x --cpus-per-task 8"})
    >>> [message] = check_request(request, [node], "debug")
    >>> message.split(":")[0]
    'the job asks for 16 CPUs per node (2 tasks x --cpus-per-task 8), but the largest node of partition debug has 8'
    """  # noqa: E501
    if not nodes:
        return [
            f"sinfo lists no nodes in partition {partition}: check the name (sinfo -s lists the "
            "partitions), or leave --partition out for the default one"
        ]
    problems = []
    needs = (
        ("cpus", request.cpus_per_node, "CPUs", "lower --cpus-per-task or --ntasks-per-node"),
        ("gpus", request.gpus_per_node, "GPUs", "lower --gpus-per-node"),
        ("memory_mb", request.memory_mb or 0, "MB of memory", "lower --mem"),
    )
    fitting = list(nodes)
    for field, wanted, unit, fix in needs:
        largest = _largest(nodes, field)
        if wanted > largest:
            how = request.how.get(field.removesuffix("_mb"), "")
            problems.append(
                f"the job asks for {wanted} {unit} per node{f' ({how})' if how else ''}, but "
                f"the largest node of partition {partition} has {largest}: it would stay "
                f"PENDING; {fix}"
            )
        fitting = [node for node in fitting if getattr(node, field) >= wanted]
    if not problems and len(fitting) < request.nodes:
        problems.append(
            f"the job asks for {request.nodes} nodes, but partition {partition} has only "
            f"{len(fitting)} that fit its per-node request: it would stay PENDING; lower --nodes"
        )
    return problems


def read_sinfo_nodes(
    environ: Mapping[str, str], *, sinfo: str = "sinfo", timeout_s: float = 20.0
) -> list[NodeFacts] | None:
    """Every node of every partition, or ``None`` where ``sinfo`` is missing or fails.

    ``None`` is not an error: a script may be rendered on a machine without Slurm.
    """
    try:
        result = subprocess.run(
            [sinfo, "-h", "-N", "-o", SINFO_FORMAT],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=dict(environ),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    return parse_sinfo_nodes(result.stdout)
