"""The conformance run itself, on a slice of polars' tests that fits CI's time.

The whole run (``python tests/conformance/run.py``, about 6 minutes on 2 cores) is a documented
command (docs/supported-operations.md). This test runs the same harness on files where the
engine once gave wrong answers, so a regression there, or a broken harness, turns CI red.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(600)

HERE = Path(__file__).resolve().parent
SLICE = (
    "tests/unit/operations/test_has_nulls.py",
    "tests/unit/operations/test_group_by.py",
    "tests/unit/operations/test_window.py",
    "tests/unit/operations/test_join_right.py",
    "tests/unit/lazyframe/test_with_context.py",
)


def test_polars_tests_give_no_wrong_answers_through_the_engine(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(HERE / "run.py"), "--out", str(tmp_path), *SLICE],
        capture_output=True,
        text=True,
        timeout=540,
    )
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["collects_routed"] > 500, run.stdout[-2000:] + run.stderr[-2000:]
    assert summary["wrong_answers"] == [], summary["wrong_answers"]
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
