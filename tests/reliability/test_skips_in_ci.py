"""The CI gate on skips (``tests/conftest.py``): only missing hardware may skip under CI=true.

Each case runs a real pytest in a child process on a small suite in a temporary directory,
with a copy of our ``tests/conftest.py`` as its conftest, and reads its exit status.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

CONFTEST = Path(__file__).parents[1] / "conftest.py"

HARDWARE_SKIPS = '''
import pytest

def test_gpu():
    pytest.skip("no NVIDIA GPU visible through NVML")

@pytest.mark.skipif(True, reason="needs 2 NVIDIA GPUs with a driver; NVML finds 0")
def test_two_gpus():
    pass

@pytest.mark.skipif(True, reason="needs a node with 2 or more CPUs")
def test_cpus():
    pass

def test_runs():
    assert True

def example():
    """
    >>> start_the_cluster()  # doctest: +SKIP
    """
'''

MISSING_PACKAGE = """
import pytest

def test_needs_pandas():
    pytest.skip("dask.dataframe needs pandas: the [bench] extra")

def test_runs():
    assert True
"""

MISSING_MODULE = """
import pytest

pytest.importorskip("no_such_package_polars_hpc", reason="no_such_package is in an extra")

def test_never_collected():
    pass
"""


def run_suite(tmp_path: Path, files: dict[str, str], ci: str | None) -> subprocess.CompletedProcess:
    """``pytest --doctest-modules`` on ``files`` with our conftest; ``CI`` as given."""
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--doctest-modules", "-q"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_hardware_skips_and_skipped_doctests_pass_in_ci(tmp_path):
    done = run_suite(tmp_path, {"test_hardware.py": HARDWARE_SKIPS}, ci="true")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "4 skipped" in done.stdout, done.stdout  # three tests and the doctest


def test_a_missing_package_fails_the_run_in_ci_and_is_named(tmp_path):
    files = {"test_package.py": MISSING_PACKAGE, "test_module.py": MISSING_MODULE}
    done = run_suite(tmp_path, files, ci="true")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout + done.stderr
    assert "skips CI does not accept" in done.stdout, done.stdout
    assert "test_package.py::test_needs_pandas: dask.dataframe needs pandas" in done.stdout
    assert "test_module.py: no_such_package is in an extra" in done.stdout, done.stdout


def test_outside_ci_a_missing_package_only_skips(tmp_path):
    done = run_suite(tmp_path, {"test_package.py": MISSING_PACKAGE}, ci=None)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "skips CI does not accept" not in done.stdout
