"""GPU fragments: whether this worker can run them, and the polars engine that does.

On a GPU a fragment runs on cudf-polars' *in-memory* executor. A fragment is already one rank's
bounded slice of one stage, so cudf-polars' own streaming executor (its default) only adds
set-up per call: on one H200, TPC-H SF10 took 163.5 s with the streaming executor and 42.7 s
with the in-memory one (``python -m benchmarks.tpch.gpu``; benchmarks/README.md).
``raise_on_fail`` because a fragment that silently ran on the CPU would misreport the engine.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping

import polars as pl

__all__ = ["gpu_fragment_engine", "gpu_ready"]


def gpu_ready(environ: Mapping[str, str]) -> bool:
    """This worker owns a GPU (``CUDA_VISIBLE_DEVICES``) and cudf-polars imports."""
    has_gpu = bool(environ.get("CUDA_VISIBLE_DEVICES", "").strip())
    return has_gpu and importlib.util.find_spec("cudf_polars") is not None


def gpu_fragment_engine() -> pl.GPUEngine:
    """The polars engine every GPU fragment is collected with (see the module docstring)."""
    return pl.GPUEngine(executor="in-memory", raise_on_fail=True)
