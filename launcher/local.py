"""Outside any launcher: a local cluster (the embedded default), secured like a job's.

The script then finds it through the same ``dask.config`` keys as under ``srun``, so one script
runs unchanged on a laptop and on a Slurm allocation.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from launcher.contact import ClusterContact
from launcher.dashboard import BOKEH_HINT, dashboard_address, dashboard_works
from launcher.memory import node_memory_budget, read_cgroup_memory_limit
from launcher.script import run_script
from launcher.security import dask_config_for, new_tls_key_pair, security_for

if TYPE_CHECKING:
    import logging

    from launcher.options import LaunchOptions
    from launcher.spec import RankPlan

__all__ = ["run_local"]


def _dashboard_state(cluster: Any, options: LaunchOptions) -> str:
    """The dashboard link, or why there is none (never a link to a page that fails)."""
    if options.dashboard_port is None:
        return "off (--no-dashboard)"
    if not dashboard_works():
        return f"not available ({BOKEH_HINT})"
    return str(cluster.dashboard_link)


def run_local(plan: RankPlan, options: LaunchOptions, logger: logging.Logger) -> int:
    """Start the planned local cluster, run the script against it, close it; the exit status."""
    import dask.config
    import psutil
    from distributed import LocalCluster

    from engine.local_cluster import plan_this_host

    host_plan = plan_this_host(None)
    budget = node_memory_budget(
        psutil.virtual_memory().total, os.environ, read_cgroup_memory_limit()
    )
    dashboard, http_address = dashboard_address("127.0.0.1", options.dashboard_port)
    cert, key = new_tls_key_pair() if plan.protocol == "tls" else (None, None)
    env = dict(plan.worker.env)
    if host_plan.gpu_ids:
        env["POLARS_HPC_GPU_IDS"] = ",".join(host_plan.gpu_ids)
    cluster = LocalCluster(
        n_workers=host_plan.n_workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=options.memory_limit_bytes or budget // host_plan.n_workers,
        host="127.0.0.1",
        protocol=f"{plan.protocol}://",
        security=security_for(ClusterContact("", "", 0, 0.0, cert, key)),
        # distributed's own dashboard_address=None still takes port 8787 for the HTTP server
        scheduler_kwargs={"dashboard": dashboard, "dashboard_address": http_address},
        preload_nanny=["preload"] if host_plan.gpu_ids else [],
        env=env,
    )
    try:
        contact = ClusterContact(cluster.scheduler_address, "", 1, 0.0, cert, key)
        logger.info(
            "local cluster: %d worker(s) at %s; dashboard: %s",
            host_plan.n_workers,
            contact.address,
            _dashboard_state(cluster, options),
        )
        with dask.config.set(dask_config_for(contact)):
            return run_script(plan.script, options.script_args)
    finally:
        with contextlib.suppress(Exception):
            cluster.close(timeout=10)
