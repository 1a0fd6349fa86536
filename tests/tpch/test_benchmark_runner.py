"""``python -m benchmarks.tpch.run`` as a user runs it: the table, peaks, --memory-limit, --json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


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
