"""The job as data: one frozen :class:`RankPlan` per rank, decided before any process starts.

:func:`plan_job` is pure (rank info, options and host facts in; plans out), so
``python -m launcher.run --dry-run`` prints exactly what a real run would do, and tests assert
on it without starting a cluster. :mod:`launcher.run` realises only its own rank's entry.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal

from launcher.hostlist import expand_hostlist
from launcher.memory import node_memory_budget, read_cgroup_memory_limit
from launcher.network import LOOPBACK
from launcher.options import DEFAULT_SCRIPT, LaunchOptions
from preload.ranks import RankInfo, slurm_tasks_on_node

__all__ = [
    "MPI_LAUNCHERS",
    "Exchange",
    "HostFacts",
    "RankPlan",
    "WorkerSpec",
    "describe_plan",
    "plan_job",
    "rendezvous_ports",
]

Exchange = Literal["local", "mpi", "rendezvous", "scheduler-file"]

MPI_LAUNCHERS: Final = frozenset({"openmpi", "mpich", "mvapich", "pals"})
"""Launchers whose ranks can talk MPI (``srun --mpi=pmi2`` shows up as ``mpich`` with PMI_RANK)."""

RENDEZVOUS_BASE_PORT: Final = 40000
RENDEZVOUS_PORT_SPAN: Final = 20000
RENDEZVOUS_CANDIDATES: Final = 4
"""Ports rank 0 tries in turn when another job on the node holds the first."""


@dataclass(frozen=True)
class HostFacts:
    """What :func:`plan_job` needs to know about the machine and environment."""

    total_memory_bytes: int
    available_cpus: int
    mpi4py_importable: bool
    environ: Mapping[str, str] = field(default_factory=dict)
    ucxx_importable: bool = False
    cgroup_memory_limit_bytes: int | None = None
    """The memory limit of this process's cgroup (Slurm's, a container's); ``None``: none."""

    @property
    def memory_budget_bytes(self) -> int:
        """Memory the workers of this node may use together (:mod:`launcher.memory`)."""
        return node_memory_budget(
            self.total_memory_bytes, self.environ, self.cgroup_memory_limit_bytes
        )

    @classmethod
    def of_this_host(cls, environ: Mapping[str, str], root: Path = Path("/")) -> HostFacts:
        """Read the facts of the machine this process runs on (no MPI initialisation)."""
        import importlib.util

        import psutil

        return cls(
            total_memory_bytes=psutil.virtual_memory().total,
            available_cpus=len(os.sched_getaffinity(0)),
            mpi4py_importable=importlib.util.find_spec("mpi4py") is not None,
            environ=dict(environ),
            ucxx_importable=importlib.util.find_spec("distributed_ucxx") is not None,
            cgroup_memory_limit_bytes=read_cgroup_memory_limit(root),
        )


@dataclass(frozen=True)
class WorkerSpec:
    """The one Dask worker a rank runs: in the rank's process, or under a nanny (``--nanny``).

    In-process, the rank applies ``env`` and the ``preload`` module's GPU choice to itself
    before the worker starts; a nanny runs ``preload_nanny`` and passes ``env`` to the worker
    process it spawns.
    """

    name: str
    nthreads: int
    memory_limit_bytes: int
    preload_nanny: tuple[str, ...]
    interface: str | None
    env: Mapping[str, str]
    nanny: bool = False


@dataclass(frozen=True)
class RankPlan:
    """What one rank does."""

    rank: int
    size: int
    runs_scheduler: bool
    runs_script: bool
    script: str
    exchange: Exchange
    protocol: str
    scheduler_interface: str | None
    worker: WorkerSpec
    local_workers: int = 1
    """Workers this rank starts: 1 in a job; the local cluster's size outside a launcher."""
    rendezvous_host: str | None = None
    rendezvous_ports: tuple[int, ...] = ()


def rendezvous_ports(job_id: int, step_id: int) -> tuple[int, ...]:
    """Ports of a job step's rendezvous: every rank derives the same ones, no file needed.

    >>> rendezvous_ports(1234, 0)
    (49872, 49873, 49874, 49875)
    """
    first = RENDEZVOUS_BASE_PORT + (job_id * 8 + step_id) % (
        RENDEZVOUS_PORT_SPAN - RENDEZVOUS_CANDIDATES
    )
    return tuple(range(first, first + RENDEZVOUS_CANDIDATES))


def _choose_exchange(info: RankInfo, options: LaunchOptions, host: HostFacts) -> Exchange:
    """Table of precedence: explicit file, no launcher, MPI, Slurm rendezvous."""
    if options.scheduler_file is not None:
        return "scheduler-file"
    if not info.in_job:
        return "local"
    if info.launcher in MPI_LAUNCHERS and host.mpi4py_importable:
        return "mpi"
    if _slurm_nodelist(host.environ):
        return "rendezvous"
    raise ValueError(
        f"ranks started by {info.launcher!r} cannot find the scheduler: mpi4py is "
        f"{'importable' if host.mpi4py_importable else 'not installed'} and this is no Slurm "
        "step; pip install mpi4py (MPI launchers), run under srun, or pass "
        "--scheduler-file PATH on a shared filesystem"
    )


def _slurm_nodelist(environ: Mapping[str, str]) -> str | None:
    return environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST") or None


def _local_size(info: RankInfo, environ: Mapping[str, str]) -> int:
    """Ranks on this node; without any count, assume all of them (never overcommit memory).

    ``srun --mpi=pmi2`` shows up as MPICH without ``MPI_LOCALNRANKS``: Slurm's count applies.
    """
    if info.local_size is not None:
        return info.local_size
    per_node, node_id = environ.get("SLURM_STEP_TASKS_PER_NODE"), environ.get("SLURM_NODEID")
    if per_node and node_id is not None and node_id.isdigit():
        return slurm_tasks_on_node(per_node, int(node_id))
    return info.size


def plan_job(info: RankInfo, options: LaunchOptions, host: HostFacts) -> dict[int, RankPlan]:
    """Plan every rank of the job: who runs the scheduler, the script and which worker.

    >>> from preload.ranks import RankInfo, slurm_tasks_on_node
    >>> info = RankInfo("slurm", rank=1, size=4, local_rank=1, local_size=4, node_id=0)
    >>> host = HostFacts(8 << 30, 8, False, {"SLURM_STEP_NODELIST": "cn[1-2]",
    ...                                       "SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0"})
    >>> plans = plan_job(info, LaunchOptions(script="q.py"), host)
    >>> [(p.rank, p.runs_scheduler, p.worker.memory_limit_bytes >> 30) for p in plans.values()]
    [(0, True, 2), (1, False, 2), (2, False, 2), (3, False, 2)]
    >>> plans[0].exchange, plans[0].rendezvous_host
    ('rendezvous', 'cn1')
    """
    if options.protocol == "ucxx" and not host.ucxx_importable:
        raise ValueError(
            "protocol='ucxx' needs the distributed-ucxx package: pip install "
            "distributed-ucxx-cu12, or pass --protocol tls"
        )
    exchange = _choose_exchange(info, options, host)
    script = options.script or f"-m {DEFAULT_SCRIPT}"
    if exchange == "local":
        from engine.local_cluster import plan_local_cluster

        local = plan_local_cluster(
            host.environ,
            n_workers=None,
            nvml_count=0,
            available_cpus=host.available_cpus,
            total_memory_bytes=host.memory_budget_bytes,
        )
        workers, memory = local.n_workers, local.memory_limit_bytes
        threads = local.threads_per_worker_pool
    else:
        workers = 1
        memory = host.memory_budget_bytes // _local_size(info, host.environ)
        threads = max(1, host.available_cpus // _local_size(info, host.environ))
    memory = options.memory_limit_bytes or memory
    one_node = exchange == "local" or _local_size(info, host.environ) == info.size
    default_interface = LOOPBACK if one_node else None
    rendezvous_host, ports = None, ()
    if exchange == "rendezvous":
        nodelist = _slurm_nodelist(host.environ)
        assert nodelist is not None
        rendezvous_host = expand_hostlist(nodelist)[0]
        ports = rendezvous_ports(
            int(host.environ.get("SLURM_JOB_ID", "0")), int(host.environ.get("SLURM_STEP_ID", "0"))
        )
    return {
        rank: RankPlan(
            rank=rank,
            size=info.size,
            runs_scheduler=rank == 0,
            runs_script=rank == 0,
            script=script,
            exchange=exchange,
            protocol=options.protocol,
            scheduler_interface=options.scheduler_interface or default_interface,
            worker=WorkerSpec(
                name=str(rank),
                nthreads=1,
                memory_limit_bytes=memory,
                preload_nanny=("preload",) if options.nanny else (),
                interface=options.worker_interface or default_interface,
                env={"POLARS_MAX_THREADS": str(threads)},
                nanny=options.nanny,
            ),
            local_workers=workers,
            rendezvous_host=rendezvous_host,
            rendezvous_ports=ports,
        )
        for rank in range(info.size)
    }


def _worker_kind(plan: RankPlan) -> str:
    """Where the rank's worker runs, as ``--dry-run`` says it."""
    if plan.exchange == "local":
        return "local cluster processes"
    if plan.worker.nanny:
        return f"nanny, preload={','.join(plan.worker.preload_nanny)}"
    return "in-process"


def describe_plan(plans: Mapping[int, RankPlan]) -> str:
    """The plan as the text ``--dry-run`` prints: one line per rank, shared settings first.

    >>> from preload.ranks import RankInfo, slurm_tasks_on_node
    >>> info = RankInfo("local", rank=0, size=1, local_rank=0, local_size=1, node_id=0)
    >>> print(describe_plan(plan_job(info, LaunchOptions(), HostFacts(8 << 30, 2, False))))
    script: -m launcher.demo
    exchange: local, protocol: tls, scheduler interface: lo
    rank 0: scheduler+script, 2 worker(s) x 1 thread, memory_limit=4.00 GiB, local cluster ...
    """
    first = plans[min(plans)]
    lines = [
        f"script: {first.script}",
        f"exchange: {first.exchange}, protocol: {first.protocol}, "
        f"scheduler interface: {first.scheduler_interface or 'default'}",
    ]
    if first.rendezvous_host:
        ports = ",".join(map(str, first.rendezvous_ports))
        lines.append(f"rendezvous: {first.rendezvous_host} ports {ports}")
    for plan in plans.values():
        roles = "+".join(
            role
            for role, on in (("scheduler", plan.runs_scheduler), ("script", plan.runs_script))
            if on
        )
        worker = plan.worker
        lines.append(
            f"rank {plan.rank}: {roles or 'worker'}, {plan.local_workers} worker(s) x "
            f"{worker.nthreads} thread, memory_limit={worker.memory_limit_bytes / 2**30:.2f} GiB, "
            f"{_worker_kind(plan)}, interface={worker.interface or 'default'}, "
            + ", ".join(f"{key}={value}" for key, value in sorted(worker.env.items()))
        )
    return "\n".join(lines)
