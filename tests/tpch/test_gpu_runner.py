"""The GPU TPC-H runner agrees with polars on a real GPU (``pytest -m gpu``; skips elsewhere)."""

from __future__ import annotations

import importlib.util

import pytest

from benchmarks.tpch import gpu
from preload.gpus import nvml_device_count

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(300)]


def test_gpu_fragments_agree_with_polars_and_cudf_polars(tpch_dir, capsys):
    if nvml_device_count() == 0:
        pytest.skip("no NVIDIA GPU visible through NVML")
    if importlib.util.find_spec("cudf_polars") is None:
        pytest.skip("cudf-polars is not installed: the [gpu] extra")
    argv = ["--scale-factor", "0.01", "--data-dir", str(tpch_dir), "--workers", "1"]
    status = gpu.main([*argv, "--queries", "1,6,14", "--repeat", "1"])
    printed = capsys.readouterr().out
    assert "| total |" in printed
    assert status == 0, printed
