"""Hardware binding of :class:`engine.dask.DaskEngine` workers (the user guide's import path).

:func:`bind_workers` runs when the engine starts, before any query: every worker reports what
it sees (:func:`preload.worker.probe_worker`), the client plans all of them at once (fair CPU
shares need every worker of a host: :func:`preload.binding.plan_bindings`), then every worker
applies and reads back its own plan and starts polars' thread pool on its bound CPUs. A worker
plugin keeps the plans, so a worker its nanny restarts (new process, same host and slot) is
bound again before it runs tasks.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from distributed import WorkerPlugin

from preload.binding import BindingPlan, plan_bindings
from preload.policy import HardwareBindingPolicy
from preload.worker import (
    BINDING_ATTRIBUTE,
    BindingError,
    apply_on_worker,
    probe_worker,
    worker_slot,
)

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "REBIND_PLUGIN_NAME",
    "HardwareBindingPolicy",
    "RebindOnRestart",
    "bind_workers",
    "start_polars_pool",
]

logger = logging.getLogger(__name__)

REBIND_PLUGIN_NAME: Final = "polars-hpc-binding"
"""Name of the :class:`RebindOnRestart` plugin: one per cluster, a new engine replaces it."""


def _bind_this_worker(
    dask_worker: Any,
    plans: Mapping[str, BindingPlan],
    policy: HardwareBindingPolicy,
    polars_threads: int | None = None,
) -> dict[str, Any]:
    """Apply the plan, then start polars' pool here so its threads inherit the binding.

    The pool gets one thread per bound CPU, or ``polars_threads`` (``num_streaming_threads``).
    """
    record = apply_on_worker(dask_worker, plans, policy)
    if not record["applied"] or not policy.cpu:
        return record
    if polars_threads is not None:  # before polars is imported: the import fixes the size
        os.environ["POLARS_MAX_THREADS"] = str(polars_threads)
        record["polars_threads"] = polars_threads
    import polars as pl

    record["polars_threads_actual"] = pl.thread_pool_size()
    if record["polars_threads_actual"] != record["polars_threads"]:
        error = (
            f"polars' thread pool already runs {record['polars_threads_actual']} threads (this "
            f"worker ran polars before binding), not {record['polars_threads']}; restart the "
            "workers (client.restart()) before creating the DaskEngine"
        )
        record.update(applied=False, reason=f"binding failed: {error}")
        setattr(dask_worker, BINDING_ATTRIBUTE, record)
        if policy.raise_on_fail:
            raise BindingError(f"worker {dask_worker.address}: {error}")
    return record


class RebindOnRestart(WorkerPlugin):
    """Bind a worker that its nanny restarted, with the plan of its slot (``host/index``).

    Workers bound by :func:`bind_workers` are left alone. A restarted worker that cannot be
    bound logs a warning: raising here would fail the worker's start and loop the nanny.
    """

    def __init__(
        self,
        plans_by_slot: Mapping[str, BindingPlan],
        policy: HardwareBindingPolicy,
        polars_threads: int | None = None,
    ):
        self.plans_by_slot = dict(plans_by_slot)
        self.policy = dataclasses.replace(policy, raise_on_fail=False)
        self.polars_threads = polars_threads

    def setup(self, worker: Any) -> None:
        """Runs on every worker when registered, and on each worker that joins later."""
        plan = self.plans_by_slot.get(worker_slot(worker))
        if plan is None or hasattr(worker, BINDING_ATTRIBUTE):
            return
        try:
            _bind_this_worker(worker, {worker.address: plan}, self.policy, self.polars_threads)
        except Exception:
            logger.exception("polars-hpc binding of restarted worker %s failed", worker.address)


def start_polars_pool(dask_worker: Any, threads: int) -> int:
    """Run on a worker: start polars' thread pool with ``threads`` threads; return its size.

    polars sizes its pool once per process, from ``POLARS_MAX_THREADS`` as it is when the
    process first imports polars. A pool sized otherwise cannot change: that raises
    ``ValueError`` naming the fix, and the variable is put back so it does not claim a size the
    pool lacks.
    """
    before = os.environ.get("POLARS_MAX_THREADS")
    os.environ["POLARS_MAX_THREADS"] = str(threads)
    import polars as pl

    actual = pl.thread_pool_size()
    if actual == threads:
        return actual
    if before is None:
        del os.environ["POLARS_MAX_THREADS"]
    else:
        os.environ["POLARS_MAX_THREADS"] = before
    raise ValueError(
        f"num_streaming_threads={threads} cannot take effect on worker {dask_worker.address}: "
        f"its polars thread pool already runs {actual} threads (polars sizes it once, when the "
        f"process first imports polars). Start the workers with POLARS_MAX_THREADS={threads} (e.g. "
        "LocalCluster(env=...) or distributed.nanny.pre-spawn-environ), or restart them "
        "(client.restart()) before creating the DaskEngine, or leave num_streaming_threads unset"
    )


def bind_workers(
    client: Client,
    policy: HardwareBindingPolicy,
    *,
    polars_threads: int | None = None,
    sysfs_root: str = "/sys",
    nvml_recording: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Bind every worker of ``client``'s cluster to its GPU's CPUs, NUMA node and NICs.

    With ``polars_threads`` (``StreamingOptions.num_streaming_threads``) every worker's polars
    pool is then started with that many threads, bound or not (:func:`start_polars_pool`).

    Parameters
    ----------
    client
        The engine's client; the binding is recorded on each worker as ``polars_hpc_binding``.
    policy
        What to bind; ``enabled=False`` binds nothing and returns ``{}``.
    polars_threads
        Threads of each worker's polars pool; ``None``: one per bound CPU, and unbound
        workers keep the pool they have.
    sysfs_root, nvml_recording
        Where workers read the topology: ``/sys`` and the live driver, or a recorded tree and
        NVML JSON (tests, or checking a plan on another machine's recording).

    Returns
    -------
    dict
        Each worker's binding record by address.
    """
    records: dict[str, dict[str, Any]] = {}
    if policy.enabled:
        views = client.run(probe_worker, sysfs_root=sysfs_root, nvml_recording=nvml_recording)
        plans = plan_bindings(list(views.values()))
        records = client.run(
            _bind_this_worker, plans=plans, policy=policy, polars_threads=polars_threads
        )
        by_slot = {view.slot: plans[address] for address, view in views.items()}
        rebind = RebindOnRestart(by_slot, policy, polars_threads)
        client.register_plugin(rebind, name=REBIND_PLUGIN_NAME)
    if polars_threads is not None:
        client.run(start_polars_pool, threads=polars_threads)
    return records
