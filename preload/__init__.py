"""Nanny preload: ``dask worker ... --preload-nanny preload`` gives each worker its own GPU.

Runs inside the nanny, before the worker process is spawned, so ``CUDA_VISIBLE_DEVICES`` set in
``nanny.env`` is what the worker's CUDA context sees. Three steps: read (environment, launcher
rank, driver), decide (:func:`preload.assign.assign_gpu`), apply (``nanny.env``). CPU/NUMA/NIC
binding happens later, inside the worker, when ``DaskEngine`` starts
(:func:`engine.hardware_binding.bind_workers`). Imports nothing heavy: it runs first on every node.

A failure stops the worker (see :mod:`preload.refusal`); the one case that carries on is a node
without any GPU (no ``CUDA_VISIBLE_DEVICES``, no driver): the worker stays a CPU worker.
"""

from __future__ import annotations

import functools
import logging
import os
import weakref
from collections.abc import Mapping
from typing import Any

from preload.assign import (
    LOCAL_CLUSTER_GPU_IDS_ENV,
    GpuAssignment,
    assign_gpu,
    assign_local_cluster_gpu,
    sharing_allowed,
)
from preload.gpus import nvml_device_count, visible_gpu_ids
from preload.ranks import detect_rank_info
from preload.refusal import refuse_to_start

__all__ = ["assign_for_rank", "dask_setup", "dask_teardown", "log_assignment"]

logger = logging.getLogger("preload")

_nanny_slots: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
"""Index of each live nanny of this process that ran the preload (``dask worker --nworkers``
starts several nannies in one process; nothing else numbers them)."""


def _claim_index(nanny: Any) -> int:
    taken = {index for other, index in _nanny_slots.items() if not _is_closed(other)}
    index = next(i for i in range(len(taken) + 1) if i not in taken)
    _nanny_slots[nanny] = index
    return index


def _is_closed(nanny: Any) -> bool:
    return str(getattr(nanny, "status", "")).endswith(("closed", "closing", "failed"))


def _nannies_in_process(nanny: Any) -> int:
    """Nannies of this process: ``dask worker --nworkers N`` builds all N before starting any."""
    live = [other for other in type(nanny)._instances if not _is_closed(other)]
    return max(1, len(live))


@functools.cache
def _log_cpu_worker() -> None:
    logger.info(
        "polars-hpc preload: no GPU on this node (no CUDA_VISIBLE_DEVICES, no NVIDIA driver); "
        "workers run as CPU workers"
    )


def assign_for_rank(
    environ: Mapping[str, str], *, workers_per_process: int = 1, index: int = 0
) -> GpuAssignment:
    """The GPU of worker ``index`` of this launcher task, read from ``environ`` and the driver.

    The nanny preload (:func:`decide`) and ``python -m launcher.run``, whose ranks run their
    worker in-process (one worker, ``index`` 0), both decide here, so the rule cannot drift.
    """
    info = detect_rank_info(environ)
    nvml_count = 0 if environ.get("CUDA_VISIBLE_DEVICES") == "" else nvml_device_count()
    return assign_gpu(
        visible_gpu_ids(environ, nvml_count),
        list_was_set="CUDA_VISIBLE_DEVICES" in environ,
        local_rank=info.local_rank,
        local_size=info.local_size,
        workers_per_process=workers_per_process,
        index=index,
        nvml_count=nvml_count,
        per_task_hint=bool(environ.get("SLURM_GPUS_PER_TASK")),
        allow_sharing=sharing_allowed(environ),
    )


def log_assignment(assignment: GpuAssignment) -> None:
    """Say which GPU the worker got, or (once per process) that it is a CPU worker."""
    if assignment.gpu_id is None:
        _log_cpu_worker()
    else:
        logger.info(
            "polars-hpc preload: worker slot %d gets GPU %s (%s)",
            assignment.local_index,
            assignment.gpu_id,
            assignment.source,
        )


def decide(nanny: Any, environ: Mapping[str, str]) -> GpuAssignment:
    """The GPU for ``nanny``'s worker, from ``environ`` (process env overlaid by ``nanny.env``)."""
    if environ.get(LOCAL_CLUSTER_GPU_IDS_ENV):
        return assign_local_cluster_gpu(environ[LOCAL_CLUSTER_GPU_IDS_ENV], nanny.name)
    return assign_for_rank(
        environ, workers_per_process=_nannies_in_process(nanny), index=_claim_index(nanny)
    )


def dask_setup(nanny: Any) -> None:
    """Set the worker's ``CUDA_VISIBLE_DEVICES`` (and rank slot) before it is spawned."""
    from distributed import Nanny

    if not isinstance(nanny, Nanny):
        raise TypeError(
            f"the polars-hpc preload must run in a Nanny, got a {type(nanny).__name__}: it sets "
            "CUDA_VISIBLE_DEVICES before the worker process starts. Pass it with "
            "`--preload-nanny preload` (or preload_nanny=['preload']), not `--preload`"
        )
    environ = {**os.environ, **nanny.env}
    try:
        assignment = decide(nanny, environ)
    except Exception as error:
        refuse_to_start(nanny, error)
        return
    nanny.env.update(assignment.worker_env(environ))
    log_assignment(assignment)


def dask_teardown(nanny: Any) -> None:
    """Release the nanny's index; the worker process that carried the settings is gone."""
    _nanny_slots.pop(nanny, None)
