"""Nanny preload: ``dask worker ... --preload-nanny preload`` gives each worker its own GPU.

Runs inside the nanny, before the worker process is spawned, so ``CUDA_VISIBLE_DEVICES`` set here
is what the worker's CUDA context sees. Imports nothing heavy: it runs first on every node.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["dask_setup", "dask_teardown"]


def dask_setup(nanny: Any) -> None:
    """Give the worker behind ``nanny`` its GPU (LocalCluster: the ``name``-th listed GPU)."""
    gpu_ids = os.environ.get("POLARS_HPC_GPU_IDS")
    if gpu_ids:
        index = int(nanny.name)
        nanny.env["CUDA_VISIBLE_DEVICES"] = gpu_ids.split(",")[index]
        nanny.env["POLARS_HPC_LOCAL_INDEX"] = str(index)


def dask_teardown(nanny: Any) -> None:
    """Nothing to undo: the worker process that carried the settings is gone."""
