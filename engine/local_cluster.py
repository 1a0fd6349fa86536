"""The cluster ``DaskEngine()`` starts when it is given none: one worker per GPU, else CPU workers.

Each worker is single-threaded for Dask (its fragments use polars' own thread pool) and gets an
equal share of the host's memory, not all of it: several workers each believing they own the
whole host is how nodes run out of memory.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import psutil

from preload.gpus import nvml_device_count, visible_gpu_ids

if TYPE_CHECKING:
    from distributed import LocalCluster

__all__ = [
    "DEFAULT_MAX_CPU_WORKERS",
    "LocalClusterPlan",
    "plan_local_cluster",
    "plan_this_host",
    "spawn_dask_workers_without_main",
    "start_local_cluster",
]

DEFAULT_MAX_CPU_WORKERS: Final = 4
"""CPU workers ``DaskEngine()`` starts on a host without GPUs, at most one per available CPU."""

DASK_WORKER_PROCESS_NAME: Final = "Dask Worker process (from Nanny)"
"""The name distributed's ``Nanny`` gives the worker process it spawns (``nanny.WorkerProcess``)."""

_MAIN_KEYS: Final = ("init_main_from_path", "init_main_from_name")
"""Keys of multiprocessing's preparation data that make a spawned child re-run ``__main__``."""

_PATCH_LOCK = threading.Lock()


@dataclass(frozen=True)
class LocalClusterPlan:
    """What the local cluster will be, before any process starts."""

    n_workers: int
    gpu_ids: tuple[str, ...]
    memory_limit_bytes: int
    threads_per_worker_pool: int


def plan_local_cluster(
    environ: Mapping[str, str],
    *,
    n_workers: int | None,
    nvml_count: int,
    available_cpus: int,
    total_memory_bytes: int,
    polars_threads: int | None = None,
) -> LocalClusterPlan:
    """Decide the worker count, GPUs, per-worker memory and polars threads.

    ``polars_threads`` is ``StreamingOptions.num_streaming_threads``; ``None`` shares the
    available CPUs out between the workers.

    >>> plan = plan_local_cluster({}, n_workers=None, nvml_count=0, available_cpus=2,
    ...                           total_memory_bytes=8 << 30)
    >>> plan.n_workers, plan.gpu_ids, plan.memory_limit_bytes, plan.threads_per_worker_pool
    (2, (), 4294967296, 1)
    >>> plan_local_cluster({}, n_workers=None, nvml_count=0, available_cpus=2,
    ...                    total_memory_bytes=8 << 30, polars_threads=8).threads_per_worker_pool
    8
    >>> plan_local_cluster({"CUDA_VISIBLE_DEVICES": "1,3"}, n_workers=None, nvml_count=4,
    ...                    available_cpus=32, total_memory_bytes=8 << 30).gpu_ids
    ('1', '3')

    An index the driver does not have is refused here, before any worker starts:

    >>> plan_local_cluster({"CUDA_VISIBLE_DEVICES": "9"}, n_workers=None, nvml_count=8,
    ...                    available_cpus=32, total_memory_bytes=8 << 30)
    Traceback (most recent call last):
    ...
    ValueError: CUDA_VISIBLE_DEVICES names GPU 9, but the NVIDIA driver reports 8 GPU(s), 0..7; ...
    """
    gpu_ids = tuple(visible_gpu_ids(environ, nvml_count))
    absent = [gpu for gpu in gpu_ids if gpu.isdigit() and nvml_count and int(gpu) >= nvml_count]
    if absent:
        raise ValueError(
            f"CUDA_VISIBLE_DEVICES names GPU {', '.join(absent)}, but the NVIDIA driver reports "
            f"{nvml_count} GPU(s), 0..{nvml_count - 1}; fix CUDA_VISIBLE_DEVICES "
            "(nvidia-smi -L lists the GPUs) or unset it to use them all"
        )
    if n_workers is None:
        n_workers = len(gpu_ids) or max(1, min(DEFAULT_MAX_CPU_WORKERS, available_cpus))
    if n_workers < 1:
        raise ValueError(f"n_workers={n_workers} must be at least 1")
    if gpu_ids and n_workers > len(gpu_ids):
        raise ValueError(
            f"n_workers={n_workers} is more than the {len(gpu_ids)} visible GPU(s) "
            f"({','.join(gpu_ids)}); pass n_workers<={len(gpu_ids)} or widen CUDA_VISIBLE_DEVICES"
        )
    return LocalClusterPlan(
        n_workers=n_workers,
        gpu_ids=gpu_ids[:n_workers],
        memory_limit_bytes=total_memory_bytes // n_workers,
        threads_per_worker_pool=polars_threads or max(1, available_cpus // n_workers),
    )


def plan_this_host(n_workers: int | None, polars_threads: int | None = None) -> LocalClusterPlan:
    """:func:`plan_local_cluster` for the machine this process runs on."""
    return plan_local_cluster(
        os.environ,
        n_workers=n_workers,
        nvml_count=nvml_device_count(),
        available_cpus=len(os.sched_getaffinity(0)),
        total_memory_bytes=psutil.virtual_memory().total,
        polars_threads=polars_threads,
    )


def without_main(
    get_preparation_data: Callable[[str], dict[str, Any]], process_name: str
) -> Callable[[str], dict[str, Any]]:
    """``get_preparation_data`` that tells children named ``process_name`` not to re-run main.

    multiprocessing's ``spawn`` (and ``forkserver``) child runs ``__main__`` again as
    ``__mp_main__`` when the parent's preparation data carries the main script's path or module
    name (``spawn.prepare`` -> ``_fixup_main_from_path``). Without those keys the child keeps
    its own ``__main__``, as it does for a parent in Jupyter or ``python -c``.

    >>> def prepared(name):
    ...     return {"name": name, "init_main_from_path": "/home/me/query.py"}
    >>> without_main(prepared, "worker")("worker")
    {'name': 'worker'}
    >>> without_main(prepared, "worker")("my-pool")["init_main_from_path"]
    '/home/me/query.py'
    """

    @functools.wraps(get_preparation_data)
    def prepare_without_main(name: str) -> dict[str, Any]:
        data = get_preparation_data(name)
        if name == process_name:
            for key in _MAIN_KEYS:
                data.pop(key, None)
        return data

    prepare_without_main.polars_hpc_without_main = process_name  # type: ignore[attr-defined]
    return prepare_without_main


def spawn_dask_workers_without_main() -> None:
    """Let Dask worker processes spawned from this process start without re-running ``__main__``.

    Why: a user's script that creates ``DaskEngine()`` at module level, with no ``if __name__ ==
    "__main__":`` guard (the reference guide's examples have none), would otherwise run again in
    every spawned worker, start a cluster there, and die in multiprocessing's bootstrapping
    check ("Nanny failed to start"). ``python - < query.py`` failed even with the guard: the
    child tried to run the file ``<stdin>``.

    Workers need nothing from the user's ``__main__``: Dask ships functions defined there by
    value (cloudpickle), and so does polars for UDFs in a plan; this is how workers already
    start when the client is a notebook. Only processes distributed names as its workers are
    affected: the user's own multiprocessing pools keep the standard behaviour. Idempotent.
    """
    from multiprocessing import spawn

    with _PATCH_LOCK:
        current = spawn.get_preparation_data
        if getattr(current, "polars_hpc_without_main", None) == DASK_WORKER_PROCESS_NAME:
            return
        spawn.get_preparation_data = without_main(current, DASK_WORKER_PROCESS_NAME)


def start_local_cluster(plan: LocalClusterPlan) -> LocalCluster:
    """Start the planned cluster; each GPU worker gets its device from the nanny preload.

    Worker processes start without re-running the user's ``__main__``
    (:func:`spawn_dask_workers_without_main`), so an unguarded script works.

    ``POLARS_MAX_THREADS`` must be in the worker's environment when the spawned process starts:
    anything imported before the nanny applies its ``env`` (a worker used to re-import the
    user's ``__main__``, which imports polars) sizes polars' thread pool then (seen on the 4x
    H200 machine: 64-thread pools in workers bound to 16 CPUs), so the value goes through
    distributed's ``pre-spawn-environ``, which is set before the process is spawned.
    """
    import dask.config
    from distributed import LocalCluster

    spawn_dask_workers_without_main()

    pre_spawn = {
        **dask.config.get("distributed.nanny.pre-spawn-environ", {}),
        "POLARS_MAX_THREADS": str(plan.threads_per_worker_pool),
    }
    # The nanny merges pre_spawn into the worker's env itself; only the GPU list is added here.
    env = {"POLARS_HPC_GPU_IDS": ",".join(plan.gpu_ids)} if plan.gpu_ids else {}
    client_value = os.environ.get("POLARS_MAX_THREADS")
    try:
        with dask.config.set({"distributed.nanny.pre-spawn-environ": pre_spawn}):
            return LocalCluster(
                n_workers=plan.n_workers,
                threads_per_worker=1,
                processes=True,
                memory_limit=plan.memory_limit_bytes,
                dashboard_address=":0",
                host="127.0.0.1",
                preload_nanny=["preload"] if plan.gpu_ids else [],
                env=env,
            )
    finally:  # the nannies run in this process and wrote it into os.environ: give it back
        if client_value is None:
            os.environ.pop("POLARS_MAX_THREADS", None)
        else:
            os.environ["POLARS_MAX_THREADS"] = client_value
