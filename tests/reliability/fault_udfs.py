"""Python UDFs the reliability tests put into queries, so a test knows where each rank is.

Workers import this module by name (polars pickles a UDF by reference): tests upload it with
``Client.upload_file``, or put this folder on ``PYTHONPATH`` for clusters they spawn. A UDF
leaves a marker file per call, then may hold until the test releases it, so the test can act
(kill a worker, press Ctrl-C) at a known point of the query instead of after a guessed sleep.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import polars as pl

HOLD_LIMIT_S = 60.0
"""A held UDF gives up after this long, so a failed test never leaves a worker stuck."""
_POLL_S = 0.02


def hold_until_released(batch: pl.Series, marker_dir: str) -> pl.Series:
    """Write ``started.<pid>`` under ``marker_dir``, then wait for the file ``release``."""
    directory = Path(marker_dir)
    (directory / f"started.{os.getpid()}").touch()
    deadline = time.monotonic() + HOLD_LIMIT_S
    while not (directory / "release").exists() and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    return batch


def mark_reached(batch: pl.Series, marker_dir: str) -> pl.Series:
    """Write ``reached.<pid>`` under ``marker_dir``: this rank got past everything before it."""
    (Path(marker_dir) / f"reached.{os.getpid()}").touch()
    return batch


def wait_for_markers(directory: Path, pattern: str, count: int, timeout_s: float = 60.0) -> None:
    """Poll until ``count`` files match ``pattern`` in ``directory``; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while len(list(directory.glob(pattern))) < count:
        if time.monotonic() > deadline:
            found = sorted(p.name for p in directory.glob(pattern))
            raise TimeoutError(
                f"{count} x {pattern} not in {directory} after {timeout_s} s: {found}"
            )
        time.sleep(_POLL_S)
