"""Outside any launcher: a local cluster (the embedded default), secured like a job's.

The script then finds it through the same ``dask.config`` keys as under ``srun``, so one script
runs unchanged on a laptop and on a Slurm allocation.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from launcher.contact import ClusterContact
from launcher.script import run_script
from launcher.security import dask_config_for, new_tls_key_pair, security_for

if TYPE_CHECKING:
    import logging

    from launcher.options import LaunchOptions
    from launcher.spec import RankPlan

__all__ = ["run_local"]


def run_local(plan: RankPlan, options: LaunchOptions, logger: logging.Logger) -> int:
    """Start the planned local cluster, run the script against it, close it; the exit status."""
    import dask.config
    from distributed import LocalCluster

    from engine.local_cluster import plan_this_host

    host_plan = plan_this_host(None)
    cert, key = new_tls_key_pair() if plan.protocol == "tls" else (None, None)
    env = dict(plan.worker.env)
    if host_plan.gpu_ids:
        env["POLARS_HPC_GPU_IDS"] = ",".join(host_plan.gpu_ids)
    cluster = LocalCluster(
        n_workers=host_plan.n_workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=plan.worker.memory_limit_bytes
        if options.memory_limit_bytes
        else host_plan.memory_limit_bytes,
        host="127.0.0.1",
        protocol=f"{plan.protocol}://",
        security=security_for(ClusterContact("", "", 0, 0.0, cert, key)),
        dashboard_address=":0" if options.dashboard_port is not None else None,
        preload_nanny=["preload"] if host_plan.gpu_ids else [],
        env=env,
    )
    try:
        contact = ClusterContact(cluster.scheduler_address, "", 1, 0.0, cert, key)
        logger.info(
            "local cluster: %d worker(s) at %s; dashboard: %s",
            host_plan.n_workers,
            contact.address,
            cluster.dashboard_link if options.dashboard_port is not None else "off",
        )
        with dask.config.set(dask_config_for(contact)):
            return run_script(plan.script, options.script_args)
    finally:
        with contextlib.suppress(Exception):
            cluster.close(timeout=10)
