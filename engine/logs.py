"""One logging setup for the project's three packages, with rank and host on worker lines.

Logger names are module names (``logging.getLogger(__name__)``), so the hierarchy has three
roots, one per top-level package: ``engine``, ``launcher``, ``preload``
(:data:`LOGGER_ROOTS`). :func:`configure_logging` gives the three one handler, one format and
one level, so they behave as one tree; ``distributed``'s own handlers get the same prefix.

Level: ``StreamingOptions(log_level=...)`` / ``POLARS_HPC_LOG_LEVEL`` for the engine (client
and workers), ``python -m launcher.run --log-level`` / the same variable for the launcher.
Worker lines read ``[rank 3 gpu07] WARNING engine.comm.bootstrap: ...``.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Mapping
from typing import IO, Any, Final

__all__ = [
    "LOGGER_ROOTS",
    "LOG_LEVEL_ENV",
    "RANK_TASK_PREFIX",
    "DropRankTaskFailures",
    "configure_logging",
    "configure_worker_logging",
    "rank_prefix",
    "resolve_log_level",
]

LOGGER_ROOTS: Final = ("engine", "launcher", "preload")
"""Top-level logger names of the project (module names under the three packages)."""

LOG_LEVEL_ENV: Final = "POLARS_HPC_LOG_LEVEL"
LEVELS: Final = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_HANDLER_MARK: Final = "_polars_hpc_handler"


def rank_prefix(rank: int | None, host: str | None = None) -> str:
    """``[rank 3 gpu07]``: the prefix of every line a rank logs (``[client host]`` without rank).

    >>> rank_prefix(3, "gpu07"), rank_prefix(None, "login1")
    ('[rank 3 gpu07]', '[client login1]')
    """
    who = "client" if rank is None else f"rank {rank}"
    return f"[{who} {host or socket.gethostname()}]"


def resolve_log_level(value: str | None, environ: Mapping[str, str], default: str) -> str:
    """The level to use: ``value`` > ``POLARS_HPC_LOG_LEVEL`` > ``default``; names checked.

    >>> resolve_log_level(None, {"POLARS_HPC_LOG_LEVEL": "debug"}, "INFO")
    'DEBUG'
    >>> resolve_log_level("loud", {}, "INFO")
    Traceback (most recent call last):
    ...
    ValueError: log level 'loud' is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL
    """
    chosen = value or environ.get(LOG_LEVEL_ENV) or default
    level = chosen.strip().upper()
    if level not in LEVELS:
        where = "" if value else f" (from {LOG_LEVEL_ENV})" if environ.get(LOG_LEVEL_ENV) else ""
        raise ValueError(f"log level {chosen!r}{where} is not one of {', '.join(LEVELS)}")
    return level


def configure_logging(
    level: str | None,
    *,
    rank: int | None = None,
    host: str | None = None,
    stream: IO[str] | None = None,
    distributed_level: str | None = None,
) -> logging.Logger:
    """Give ``engine``, ``launcher`` and ``preload`` one prefixed handler and ``level``.

    Idempotent: a second call replaces this function's handler, it never adds another.
    ``level=None`` keeps a level set before (a launcher's) and uses WARNING where none was.
    ``distributed``'s existing handlers get the same prefix (and ``distributed_level`` if
    given), so a rank's lines all say which rank wrote them. Returns the ``launcher`` logger.
    """
    formatter = logging.Formatter(f"{rank_prefix(rank, host)} %(levelname)s %(name)s: %(message)s")
    for name in LOGGER_ROOTS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if getattr(h, _HANDLER_MARK, False)]:
            logger.removeHandler(handler)
        handler = logging.StreamHandler(sys.stderr if stream is None else stream)
        setattr(handler, _HANDLER_MARK, True)
        handler.setFormatter(formatter)
        logger.addHandler(handler)
        logger.propagate = False
        if level is not None or logger.level == logging.NOTSET:
            logger.setLevel(level or "WARNING")
    distributed = logging.getLogger("distributed")
    for handler in distributed.handlers:
        handler.setFormatter(formatter)
    if distributed_level is not None:
        distributed.setLevel(distributed_level)
    return logging.getLogger("launcher")


RANK_TASK_PREFIX: Final = "polars-hpc-"
"""Task keys of query ranks start with this (``engine.executor.dispatch.submit_ranks``)."""


class DropRankTaskFailures(logging.Filter):
    """Drops distributed's per-task failure messages for polars-hpc rank tasks.

    distributed logs ~30 lines (task repr, exception repr, traceback as one escaped string)
    at ERROR for every failed task, so a query failing on 4 ranks printed 120 lines before the
    client's own error; and when the client then cancels the other ranks, each logs "Async
    instruction ... ended with CancelledError". The rank logs one line itself
    (``engine.executor.dispatch``: INFO, the traceback at DEBUG) and the client shows the
    error once, naming the rank. Other tasks keep distributed's messages.

    >>> record = logging.LogRecord("distributed.worker", logging.ERROR, "", 0,
    ...     "Compute Failed Key: %s", ("polars-hpc-0a1b-rank-3",), None)
    >>> DropRankTaskFailures().filter(record)
    False
    >>> record.args = ("sum-of-things-42",)
    >>> DropRankTaskFailures().filter(record)
    True
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """False for a failure or cancellation record of one of our rank tasks."""
        message = str(record.msg)
        if message.startswith("Compute Failed"):
            args = record.args if isinstance(record.args, tuple) else ()
            return not (args and str(args[0]).startswith(RANK_TASK_PREFIX))
        if message.startswith("Async instruction for") and message.endswith("CancelledError"):
            return f"('{RANK_TASK_PREFIX}" not in message
        return True


_NOISY_LOGGERS: Final = ("distributed.worker", "distributed.worker.state_machine")
"""Loggers :class:`DropRankTaskFailures` is installed on (filters are per logger)."""


def configure_worker_logging(dask_worker: Any, ranks: Mapping[str, int], level: str | None) -> str:
    """Run on a worker (``client.run``): prefix its log lines with its rank and host.

    Also drops distributed's per-task "Compute Failed" block for rank tasks
    (:class:`DropRankTaskFailures`; idempotent). Returns the prefix, so the caller can check
    every worker took its rank.
    """
    rank = ranks.get(dask_worker.address)
    configure_logging(level, rank=rank)
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropRankTaskFailures) for f in logger.filters):
            logger.addFilter(DropRankTaskFailures())
    return rank_prefix(rank)
