"""Log lines prefixed with rank and host, so ``srun`` output of many ranks stays readable."""

from __future__ import annotations

import logging
import socket

__all__ = ["LOGGER_NAME", "configure_logging", "rank_prefix"]

LOGGER_NAME = "launcher"


def rank_prefix(rank: int, host: str | None = None) -> str:
    """``[rank 3 gpu07]``: the prefix of every launcher log line.

    >>> rank_prefix(3, "gpu07")
    '[rank 3 gpu07]'
    """
    return f"[rank {rank} {host or socket.gethostname()}]"


def configure_logging(rank: int, *, verbose: bool = False) -> logging.Logger:
    """Prefix the launcher's and distributed's log lines; keep distributed at WARNING.

    Four ranks of distributed's INFO lines bury the few that matter; ``verbose`` keeps them.
    """
    formatter = logging.Formatter(f"{rank_prefix(rank)} %(levelname)s %(name)s: %(message)s")
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler()
        logger.addHandler(handler)
        logger.propagate = False
    for handler in logger.handlers:
        handler.setFormatter(formatter)
    logger.setLevel(logging.INFO)
    distributed = logging.getLogger("distributed")
    for handler in distributed.handlers:
        handler.setFormatter(formatter)
    distributed.setLevel(logging.INFO if verbose else logging.WARNING)
    return logger
