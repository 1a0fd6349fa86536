"""Stop a nanny from starting its worker when the preload failed.

Dask's ``PreloadManager.start`` logs and swallows exceptions from ``dask_setup``, which would
leave a worker running on the wrong (or no) GPU. Instead the preload swaps in
:class:`RefusedWorker` as the nanny's worker class: the spawned process raises the preload's
error, the nanny reports "failed to start" through Dask's normal path (closing cleanly), and
``dask worker`` / ``LocalCluster`` fail with the original message in the chain.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Final

__all__ = ["PRELOAD_ERROR_ENV", "PreloadError", "RefusedWorker", "refuse_to_start"]

logger = logging.getLogger("preload")

PRELOAD_ERROR_ENV: Final = "POLARS_HPC_PRELOAD_ERROR"
"""Carries the preload's error message into the refused worker process."""


class PreloadError(RuntimeError):
    """The nanny preload could not set up this worker."""


class RefusedWorker:
    """Stand-in worker class whose construction raises the preload's error."""

    def __init__(self, **_kwargs: Any) -> None:
        raise PreloadError(os.environ.get(PRELOAD_ERROR_ENV, "the nanny preload failed"))


def refuse_to_start(nanny: Any, error: BaseException) -> None:
    """Log ``error`` and make ``nanny`` fail to start its worker with it."""
    message = f"polars-hpc preload: {type(error).__name__}: {error}"
    logger.error("%s; the worker will not start", message)
    nanny.env[PRELOAD_ERROR_ENV] = message
    nanny.Worker = RefusedWorker
