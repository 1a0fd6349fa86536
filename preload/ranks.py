"""Who am I in this job: rank, size and local rank from the launcher's environment.

One table, one loop (after submitit's job environments). The launcher and the nanny preload both
read ranks through :func:`detect_rank_info`, so a worker's GPU and its Dask rank never disagree.

Row order is precedence. MPI launchers come before Slurm: ``mpiexec`` inside an ``sbatch``
allocation starts its proxies through ``srun``, so every rank inherits the *proxy's*
``SLURM_PROCID``, while the MPI variables are right. Under ``srun --mpi=pmi2`` both are set and
agree. An ``sbatch`` batch script exports ``SLURM_PROCID=0`` without being a step of tasks: Slurm
only counts when ``SLURM_STEP_ID`` names a real step.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "LAUNCHERS",
    "RRUN_VARIABLES",
    "RankInfo",
    "RankVars",
    "detect_rank_info",
    "refuse_inside_rrun",
    "slurm_tasks_on_node",
]


@dataclass(frozen=True)
class RankVars:
    """The environment variable names one launcher uses; ``None`` where it has none."""

    rank: str
    size: str
    local_rank: str | None
    local_size: str | None = None
    node_id: str | None = None


@dataclass(frozen=True)
class RankInfo:
    """A process's place in the job.

    ``launcher`` is ``"local"`` when no launcher variable is set: a one-process job.
    """

    launcher: str
    rank: int
    size: int
    local_rank: int
    local_size: int | None = None
    node_id: int | None = None

    @property
    def in_job(self) -> bool:
        """True when a parallel launcher (Slurm, MPI, ...) started this process."""
        return self.launcher != "local"


LAUNCHERS: Final[tuple[tuple[str, RankVars], ...]] = (
    (
        "openmpi",
        RankVars(
            rank="OMPI_COMM_WORLD_RANK",
            size="OMPI_COMM_WORLD_SIZE",
            local_rank="OMPI_COMM_WORLD_LOCAL_RANK",
            local_size="OMPI_COMM_WORLD_LOCAL_SIZE",
        ),
    ),
    (
        "mvapich",
        RankVars(
            rank="MV2_COMM_WORLD_RANK",
            size="MV2_COMM_WORLD_SIZE",
            local_rank="MV2_COMM_WORLD_LOCAL_RANK",
            local_size="MV2_COMM_WORLD_LOCAL_SIZE",
        ),
    ),
    (
        "pals",
        RankVars(
            rank="PALS_RANKID",
            size="PMI_SIZE",
            local_rank="PALS_LOCAL_RANKID",
            local_size="PALS_LOCAL_SIZE",
            node_id="PALS_NODEID",
        ),
    ),
    (
        "lsf",
        RankVars(
            rank="JSM_NAMESPACE_RANK",
            size="JSM_NAMESPACE_SIZE",
            local_rank="JSM_NAMESPACE_LOCAL_RANK",
            local_size="JSM_NAMESPACE_LOCAL_SIZE",
        ),
    ),
    (
        "flux",
        RankVars(rank="FLUX_TASK_RANK", size="FLUX_JOB_SIZE", local_rank="FLUX_TASK_LOCAL_ID"),
    ),
    (
        "mpich",
        RankVars(
            rank="PMI_RANK",
            size="PMI_SIZE",
            local_rank="MPI_LOCALRANKID",
            local_size="MPI_LOCALNRANKS",
        ),
    ),
    (
        "slurm",
        RankVars(
            rank="SLURM_PROCID",
            size="SLURM_NTASKS",
            local_rank="SLURM_LOCALID",
            node_id="SLURM_NODEID",
        ),
    ),
)

_TASKS_PER_NODE_ITEM: Final = re.compile(r"^(\d+)(?:\(x(\d+)\))?$")


def slurm_tasks_on_node(tasks_per_node: str, node_id: int) -> int:
    """Tasks on node ``node_id`` from Slurm's compressed ``SLURM_STEP_TASKS_PER_NODE``.

    >>> slurm_tasks_on_node("4(x2),1", 0), slurm_tasks_on_node("4(x2),1", 2)
    (4, 1)
    """
    counts: list[int] = []
    for item in tasks_per_node.split(","):
        match = _TASKS_PER_NODE_ITEM.match(item.strip())
        if match is None:
            raise ValueError(f"cannot parse Slurm tasks-per-node {tasks_per_node!r} at {item!r}")
        counts += [int(match[1])] * int(match[2] or 1)
    if not 0 <= node_id < len(counts):
        raise ValueError(f"node {node_id} is not in Slurm tasks-per-node {tasks_per_node!r}")
    return counts[node_id]


def _is_real_slurm_step(environ: Mapping[str, str]) -> bool:
    step = environ.get("SLURM_STEP_ID")
    return step is not None and step.isdigit() and int(step) < 0xFFFFFFF0


def _int_or_none(environ: Mapping[str, str], name: str | None) -> int | None:
    if name is None or name not in environ:
        return None
    return _parse_int(environ, name)


def _parse_int(environ: Mapping[str, str], name: str) -> int:
    value = environ[name]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def detect_rank_info(environ: Mapping[str, str]) -> RankInfo:
    """Read this process's rank from the first launcher in :data:`LAUNCHERS` whose rank is set.

    >>> detect_rank_info({"PMI_RANK": "3", "PMI_SIZE": "8", "MPI_LOCALRANKID": "1"})
    RankInfo(launcher='mpich', rank=3, size=8, local_rank=1, local_size=None, node_id=None)
    >>> detect_rank_info({}).launcher
    'local'
    """
    for launcher, names in LAUNCHERS:
        if names.rank not in environ:
            continue
        if launcher == "slurm" and not _is_real_slurm_step(environ):
            continue
        rank, size = _parse_int(environ, names.rank), _parse_int(environ, names.size)
        local_rank = _int_or_none(environ, names.local_rank)
        node_id = _int_or_none(environ, names.node_id)
        local_size = _int_or_none(environ, names.local_size)
        per_node = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE")
        if launcher == "slurm" and node_id is not None and per_node:
            local_size = slurm_tasks_on_node(per_node, node_id)
        if not 0 <= rank < size:
            raise ValueError(f"{names.rank}={rank} is outside 0..{size - 1} ({names.size}={size})")
        return RankInfo(
            launcher=launcher,
            rank=rank,
            size=size,
            local_rank=rank if local_rank is None else local_rank,
            local_size=local_size,
            node_id=node_id,
        )
    return RankInfo(launcher="local", rank=0, size=1, local_rank=0, local_size=1, node_id=0)


RRUN_VARIABLES: Final = ("RRUN_RANK", "RAPIDSMPF_RANK")


def refuse_inside_rrun(environ: Mapping[str, str], what: str) -> None:
    """Raise ``RuntimeError`` when ``rrun`` (rapidsmpf's launcher) started this process.

    ``rrun`` already runs one process per GPU and binds them itself; a Dask cluster on top would
    start a second set of workers fighting over the same GPUs.

    >>> refuse_inside_rrun({"RRUN_RANK": "0"}, "DaskEngine")
    Traceback (most recent call last):
    ...
    RuntimeError: DaskEngine cannot run inside an rrun cluster (RRUN_RANK=0 is set): rrun ...
    """
    for name in RRUN_VARIABLES:
        if name in environ:
            raise RuntimeError(
                f"{what} cannot run inside an rrun cluster ({name}={environ[name]} is set): "
                "rrun already starts one process per GPU. Run the script with plain python, "
                "srun or mpiexec instead, or unset the variable."
            )
