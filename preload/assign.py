"""Which GPU a nanny's worker gets: a pure decision from the launcher's view of the node.

A node runs ``local_size`` launcher tasks (``srun``/``mpiexec`` ranks), each a ``dask worker``
process with ``workers_per_process`` nannies. Worker ``index`` of the task at ``local_rank``
takes node slot ``local_rank * workers_per_process + index``, so two ``dask worker`` processes
on one node never pick the same GPU. The visible list is read two ways:

- *node list*: it holds a GPU for every slot of the node (``CUDA_VISIBLE_DEVICES`` unset, or
  set to at least ``local_size * workers_per_process`` GPUs): the worker takes ``list[slot]``;
- *task list*: the launcher already narrowed it to this task's GPUs (``srun --gpus-per-task``):
  it is set, shorter than the node needs, yet holds this process's workers, and either the
  driver shows more GPUs than the list or ``SLURM_GPUS_PER_TASK`` says so: the worker takes
  ``list[index]``.

Anything else has more workers than GPUs: an error, unless ``POLARS_HPC_ALLOW_GPU_SHARING=1``
puts workers round-robin on the GPUs (``list[slot % len(list)]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "ALLOW_SHARING_ENV",
    "LOCAL_CLUSTER_GPU_IDS_ENV",
    "LOCAL_INDEX_ENV",
    "GpuAssignment",
    "GpuAssignmentError",
    "assign_gpu",
    "assign_local_cluster_gpu",
    "sharing_allowed",
]

ALLOW_SHARING_ENV: Final = "POLARS_HPC_ALLOW_GPU_SHARING"
"""Set to ``1`` to let several workers of a node share GPUs instead of failing."""
LOCAL_CLUSTER_GPU_IDS_ENV: Final = "POLARS_HPC_GPU_IDS"
"""Set by ``DaskEngine``'s LocalCluster: worker ``name`` i takes the i-th listed GPU."""
LOCAL_INDEX_ENV: Final = "POLARS_HPC_LOCAL_INDEX"
"""The worker's slot on its node, for rank order (:mod:`engine.cluster_info`)."""

Source = Literal["node list", "task list", "shared", "local cluster", "no gpu"]


class GpuAssignmentError(RuntimeError):
    """A worker cannot get a GPU of its own; the message says how to fix the launch."""


@dataclass(frozen=True)
class GpuAssignment:
    """The decision: ``gpu_id`` as ``CUDA_VISIBLE_DEVICES`` spells it (``None``: CPU worker)."""

    gpu_id: str | None
    local_index: int
    source: Source

    def worker_env(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Variables the worker process must start with."""
        env = {LOCAL_INDEX_ENV: str(self.local_index)}
        if self.gpu_id is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu_id
            env["CUDA_DEVICE_ORDER"] = environ.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
        return env


def sharing_allowed(environ: Mapping[str, str]) -> bool:
    """Whether ``POLARS_HPC_ALLOW_GPU_SHARING`` is on (``1``/``true``/``yes``)."""
    return environ.get(ALLOW_SHARING_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def assign_gpu(
    visible: Sequence[str],
    *,
    list_was_set: bool,
    local_rank: int,
    local_size: int | None,
    workers_per_process: int,
    index: int,
    nvml_count: int,
    per_task_hint: bool = False,
    allow_sharing: bool = False,
) -> GpuAssignment:
    """Pick worker ``index``'s GPU (see the module docstring for the rule).

    >>> assign_gpu(["0", "1", "2", "3", "4", "5"], list_was_set=True, local_rank=1,
    ...            local_size=2, workers_per_process=3, index=2, nvml_count=0)
    GpuAssignment(gpu_id='5', local_index=5, source='node list')
    >>> assign_gpu(["6"], list_was_set=True, local_rank=6, local_size=8,
    ...            workers_per_process=1, index=0, nvml_count=8)
    GpuAssignment(gpu_id='6', local_index=6, source='task list')
    """
    per_process = workers_per_process
    slot = local_rank * per_process + index
    if not visible:
        return GpuAssignment(None, slot, "no gpu")
    tasks = local_size if local_size is not None else local_rank + 1
    if len(visible) >= tasks * per_process and slot < len(visible):
        return GpuAssignment(visible[slot], slot, "node list")
    narrowed = per_task_hint or nvml_count > len(visible)
    if list_was_set and narrowed and index < len(visible) and len(visible) >= per_process:
        return GpuAssignment(visible[index], slot, "task list")
    if allow_sharing:
        return GpuAssignment(visible[slot % len(visible)], slot, "shared")
    raise GpuAssignmentError(
        f"not enough GPUs: the task at local rank {local_rank} "
        f"(of {local_size if local_size is not None else 'unknown'} on this node) runs "
        f"{per_process} worker(s); worker {index} needs GPU slot {slot}, but this task sees "
        f"{len(visible)} GPU(s) ({','.join(visible)}). Start fewer workers (--nworkers) or "
        "tasks per node, give each task its own GPUs (srun --gpus-per-task), or set "
        f"{ALLOW_SHARING_ENV}=1 to let workers share GPUs"
    )


def assign_local_cluster_gpu(gpu_ids: str, name: object) -> GpuAssignment:
    """``DaskEngine``'s LocalCluster: worker ``name`` i takes the i-th of ``gpu_ids``.

    >>> assign_local_cluster_gpu("1,3", 1)
    GpuAssignment(gpu_id='3', local_index=1, source='local cluster')
    """
    ids = [item.strip() for item in gpu_ids.split(",") if item.strip()]
    try:
        index = int(str(name))
    except ValueError:
        raise GpuAssignmentError(
            f"{LOCAL_CLUSTER_GPU_IDS_ENV}={gpu_ids!r} needs integer worker names (LocalCluster's "
            f"0, 1, ...), got {name!r}; unset {LOCAL_CLUSTER_GPU_IDS_ENV} for `dask worker`"
        ) from None
    if not 0 <= index < len(ids):
        raise GpuAssignmentError(
            f"worker {index} has no GPU in {LOCAL_CLUSTER_GPU_IDS_ENV}={gpu_ids!r}; start at "
            f"most {len(ids)} worker(s)"
        )
    return GpuAssignment(ids[index], index, "local cluster")
