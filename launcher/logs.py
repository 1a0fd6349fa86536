"""The launcher's logging: the project's one setup (:mod:`engine.logs`), prefixed by rank.

``python -m launcher.run --log-level LEVEL`` (else ``POLARS_HPC_LOG_LEVEL``, else ``INFO``) sets
the level of the ``launcher``, ``engine`` and ``preload`` loggers of every rank; ``distributed``
stays at WARNING unless ``verbose``, since four ranks of its INFO lines bury the few that matter.
"""

from __future__ import annotations

import logging
import os

from engine.logs import configure_logging as configure_project_logging
from engine.logs import rank_prefix, resolve_log_level

__all__ = ["LOGGER_NAME", "configure_logging", "rank_prefix"]

LOGGER_NAME = "launcher"


def configure_logging(
    rank: int, *, level: str | None = None, verbose: bool = False
) -> logging.Logger:
    """Prefix this rank's log lines with ``[rank N host]``; the ``launcher`` logger."""
    resolved = resolve_log_level(level, os.environ, "INFO")
    return configure_project_logging(
        resolved, rank=rank, distributed_level="INFO" if verbose else "WARNING"
    )
