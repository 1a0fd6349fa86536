"""TPC-H parquet data from ``tpchgen-cli``, generated once per scale factor and cached.

The cache is a directory per scale factor (default ``~/.cache/polars-hpc/tpch/sf<SF>``). Data is
written to a temporary sibling directory and renamed into place only when ``tpchgen-cli`` has
finished, so a run that is killed half-way never leaves a cache that looks complete.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Final

import polars as pl

__all__ = ["TABLES", "default_cache_dir", "ensure_tpch_data", "scan_tables", "table_paths"]

TABLES: Final = (
    "region",
    "nation",
    "supplier",
    "customer",
    "part",
    "partsupp",
    "orders",
    "lineitem",
)
"""The eight TPC-H tables; ``tpchgen-cli`` writes each as ``<table>.parquet``."""

CACHE_ENV: Final = "POLARS_HPC_TPCH_CACHE"
"""Environment variable that moves the cache root (default ``~/.cache/polars-hpc/tpch``)."""


def default_cache_dir(scale_factor: float, environ: Mapping[str, str] = os.environ) -> Path:
    """Directory holding the data of one scale factor.

    >>> default_cache_dir(0.01, {"POLARS_HPC_TPCH_CACHE": "/data/tpch"}).as_posix()
    '/data/tpch/sf0.01'
    >>> default_cache_dir(1, {"POLARS_HPC_TPCH_CACHE": "/data/tpch"}).name
    'sf1'
    """
    root = environ.get(CACHE_ENV) or Path.home() / ".cache" / "polars-hpc" / "tpch"
    return Path(root) / f"sf{_format_scale_factor(scale_factor)}"


def table_paths(data_dir: Path) -> dict[str, Path]:
    """Path of every table's parquet file under ``data_dir``."""
    return {name: Path(data_dir) / f"{name}.parquet" for name in TABLES}


def ensure_tpch_data(
    scale_factor: float, data_dir: Path | None = None, *, tpchgen: str | None = None
) -> Path:
    """Return a directory with all eight tables at ``scale_factor``, generating it if missing.

    Parameters
    ----------
    scale_factor
        TPC-H scale factor (1 is about 1 GB of raw data, 0.01 about 10 MB).
    data_dir
        Where the data lives; default :func:`default_cache_dir`. An existing directory that
        holds all eight tables is reused as it is.
    tpchgen
        The ``tpchgen-cli`` executable; default the one beside this Python, else on ``PATH``.
    """
    if not scale_factor > 0:
        raise ValueError(f"scale_factor={scale_factor!r} must be a positive number, e.g. 0.01 or 1")
    target = Path(data_dir) if data_dir is not None else default_cache_dir(scale_factor)
    if all(path.is_file() for path in table_paths(target).values()):
        return target
    if target.exists():
        raise FileExistsError(
            f"{target} exists but does not hold all TPC-H tables ({', '.join(TABLES)}); "
            "delete it or pass another data_dir"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    staging.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
    try:
        command = [
            tpchgen or _find_tpchgen(),
            "parquet",
            "--scale-factor",
            _format_scale_factor(scale_factor),
            "--output-dir",
            str(staging),
            "--no-progress",
            "--quiet",
        ]
        subprocess.run(command, check=True)
        missing = [name for name, path in table_paths(staging).items() if not path.is_file()]
        if missing:
            raise RuntimeError(f"{' '.join(command)} did not write tables {missing}")
        _publish(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def scan_tables(data_dir: Path) -> dict[str, pl.LazyFrame]:
    """One ``pl.scan_parquet`` per table: the input mapping every query in ``queries`` takes."""
    return {name: pl.scan_parquet(path) for name, path in table_paths(data_dir).items()}


def _publish(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; if another process got there first, keep its copy."""
    try:
        staging.rename(target)
    except OSError:
        if not all(path.is_file() for path in table_paths(target).values()):
            raise
        shutil.rmtree(staging, ignore_errors=True)


def _find_tpchgen() -> str:
    beside_python = Path(sys.executable).parent / "tpchgen-cli"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("tpchgen-cli")
    if found is None:
        raise FileNotFoundError(
            "tpchgen-cli is not installed: pip install tpchgen-cli (or the project's [bench] extra)"
        )
    return found


def _format_scale_factor(scale_factor: float) -> str:
    """``1`` for 1.0, ``0.01`` for 0.01: the spelling used in directory names and on the CLI."""
    return f"{scale_factor:g}"
