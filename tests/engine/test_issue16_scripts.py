"""Issue 16, as a user meets it: scripts run with ``python``, in a fresh process.

- Item 1: ``DaskEngine()`` at module level, no ``if __name__ == "__main__":`` guard, run as
  ``python file.py``, ``python - < file`` and ``python -m module``: spawned workers must not
  run the script again (they did, and each died with "Nanny failed to start").
- Item 4: a query failing on every rank shows its error once, naming the rank; distributed's
  30-line "Compute Failed" block per rank is gone; the traceback stays in the worker log at
  DEBUG.
- Item 10: ``DaskEngine(n_workers=2)`` under ``python -m launcher.run`` warns and runs on the
  launcher's workers (it raised "cluster already started").

Each test starts real processes and a real cluster, so each has its own deadline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Final

import pytest

REPO: Final = Path(__file__).resolve().parents[2]
RUN_TIMEOUT_S: Final = 240

UNGUARDED: Final = textwrap.dedent(
    """\
    import polars as pl
    from engine.dask import DaskEngine

    OFFSET = 10


    def add_offset(x: int) -> int:
        return x + OFFSET


    print("script body ran", flush=True)
    lf = pl.LazyFrame({"a": list(range(100))}).select(
        pl.col("a").map_elements(add_offset, return_dtype=pl.Int64).sum()
    )
    with DaskEngine(n_workers=2) as engine:
        print("answer", lf.collect(engine=engine).item(), flush=True)
    """
)
"""The reference guide's shape: engine at module level, a UDF defined in ``__main__``."""


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "UCX_WARN_UNUSED_ENV_VARS": "n",
        "POLARS_HPC_PROGRESS": "0",
    }


def _run(
    args: list[str], cwd: Path, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess:
    return subprocess.run(
        args,
        cwd=cwd,
        input=stdin,
        env={**_env(), **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
@pytest.mark.parametrize("how", ["file", "stdin", "module"])
def test_an_unguarded_script_runs_and_its_workers_do_not_run_it_again(tmp_path, how):
    (tmp_path / "unguarded_query.py").write_text(UNGUARDED)
    python = [sys.executable]
    if how == "file":
        done = _run([*python, "unguarded_query.py"], tmp_path)
    elif how == "stdin":
        done = _run([*python, "-"], tmp_path, stdin=UNGUARDED)
    else:
        done = _run([*python, "-m", "unguarded_query"], tmp_path, PYTHONPATH=f"{REPO}:{tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "answer 5950" in done.stdout  # sum(a + 10) over 0..99, the UDF ran on the workers
    assert done.stdout.count("script body ran") == 1, done.stdout  # not again in each worker
    assert "Nanny failed" not in done.stderr


FAILING: Final = textwrap.dedent(
    """\
    import polars as pl
    from engine.dask import DaskEngine

    if __name__ == "__main__":
        lf = pl.LazyFrame({"s": ["1", "2", "x", "4"] * 1000}).select(pl.col("s").cast(pl.Int64))
        with DaskEngine(n_workers=2) as engine:
            lf.collect(engine=engine)
    """
)
"""Every rank fails: each holds rows with ``"x"``, which polars cannot cast. (Guarded, so the
test pins item 4 alone.)"""
POLARS_MESSAGE: Final = "conversion from `str` to `i64` failed in column 's'"


@pytest.mark.timeout(2 * RUN_TIMEOUT_S + 30)
def test_a_failing_query_shows_polars_error_once_with_the_rank(tmp_path):
    (tmp_path / "failing.py").write_text(FAILING)
    done = _run([sys.executable, "failing.py"], tmp_path)
    assert done.returncode == 1
    assert "Compute Failed" not in done.stderr
    assert "CancelledError" not in done.stderr
    assert done.stderr.count(POLARS_MESSAGE) == 1, done.stderr
    assert "polars.exceptions.InvalidOperationError" in done.stderr
    assert "DaskEngine: raised on rank " in done.stderr
    assert len(done.stderr.splitlines()) < 40, done.stderr  # polars' own error, not 3 screens

    debug = _run([sys.executable, "failing.py"], tmp_path, POLARS_HPC_LOG_LEVEL="DEBUG")
    worker_lines = [line for line in debug.stderr.splitlines() if line.startswith("[rank ")]
    failed = [line for line in worker_lines if "failed on rank" in line]
    assert failed, debug.stderr
    assert all(POLARS_MESSAGE in line for line in failed), debug.stderr
    assert "traceback" in debug.stderr
    assert "Traceback (most recent call last)" in debug.stderr
    assert "Compute Failed" not in debug.stderr


LAUNCHED: Final = textwrap.dedent(
    """\
    import polars as pl
    from engine.dask import DaskEngine

    with DaskEngine(n_workers=2) as engine:
        print("ranks", engine.nranks)
        lf = pl.LazyFrame({"a": [1, 2, 3]}).select(pl.sum("a"))
        print("sum", lf.collect(engine=engine).item())
    """
)


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_n_workers_under_the_launcher_warns_and_uses_the_launchers_workers(tmp_path):
    (tmp_path / "laptop_script.py").write_text(LAUNCHED)
    done = _run(
        [sys.executable, "-m", "launcher.run", "--no-dashboard", "laptop_script.py"], tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sum 6" in done.stdout
    assert "DaskEngine(n_workers=2) is ignored" in done.stderr
    assert "laptop_script.py:4" in done.stderr  # the warning points at the user's line
