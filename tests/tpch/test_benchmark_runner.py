"""The TPC-H benchmark runner runs end to end, and the benchmark modules' examples hold.

CI does not time anything, but a runner that no longer starts is found here, not on the day
someone needs the numbers.
"""

from __future__ import annotations

import doctest
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.tpch import compare, data, run

pytestmark = pytest.mark.timeout(180)

REPO = Path(__file__).resolve().parents[2]


def test_runner_prints_the_table_and_all_engines_agree(tpch_dir, capsys):
    pytest.importorskip("pandas", reason="dask.dataframe needs pandas: the [bench] extra")
    argv = ["--scale-factor", "0.01", "--data-dir", str(tpch_dir), "--workers", "2"]
    status = run.main([*argv, "--queries", "6,14"])
    printed = capsys.readouterr().out
    assert "| Q6 |" in printed
    assert "| Q14 |" in printed
    assert "| total |" in printed
    assert status == 0, printed


def test_bad_query_number_names_the_valid_ones():
    with pytest.raises(ValueError, match=r"use numbers 1\.\.22"):
        run.parse_query_numbers("0")


@pytest.mark.parametrize("module", [compare, data, run], ids=lambda module: module.__name__)
def test_docstring_examples(module):
    # pyproject's testpaths leave benchmarks/ out of --doctest-modules; run them here.
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


@pytest.mark.timeout(240)
def test_the_runner_prints_times_and_peaks_and_writes_json(tpch_dir, tmp_path):
    out = tmp_path / "rows.json"
    command = [
        *(sys.executable, "-m", "benchmarks.tpch.run", "--scale-factor", "0.01"),
        *("--data-dir", str(tpch_dir), "--workers", "2", "--queries", "1,6"),
        *("--no-dask-dataframe", "--memory-limit", "1GiB", "--json", str(out)),
    ]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=200)
    assert done.returncode == 0, done.stderr
    assert "2 workers x " in done.stdout
    assert "thread(s), 1.0 GiB each" in done.stdout
    assert "| total |" in done.stdout
    assert "2/2 agree" in done.stdout
    rows = json.loads(out.read_text())
    assert [row["number"] for row in rows] == [1, 6]
    assert all(len(row["rank_peak_bytes"]) == 2 for row in rows)
    assert all(row["polars_peak_bytes"] > 0 for row in rows)
