"""Real services for launcher tests: a Slurm on this machine, network namespaces, job scripts.

The Slurm fixture starts munged (unless one runs), slurmctld and slurmd with state in a temporary
directory and free ports (``tests/launcher/slurm/start.sh``), and stops them at the end of the
session (``stop.sh``). It skips, with the reason, where Slurm is not installed or we are not root.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

HERE = Path(__file__).parent
SLURM_SCRIPTS = HERE / "slurm"
REPO = HERE.parent.parent

QUERY_SCRIPT = '''\
"""Group-by on every rank; compare with polars' own engine; exit with argv[1] (default 0)."""
import sys

import polars as pl

from engine.dask import DaskEngine

lf = (
    pl.LazyFrame({"k": [i % 7 for i in range(1000)], "v": list(range(1000))})
    .group_by("k")
    .agg(pl.col("v").sum())
    .sort("k")
)
with DaskEngine() as engine:
    nranks = engine.nranks
    hosts = sorted({info.address.rsplit(":", 1)[0] for info in engine.gather_cluster_info()})
    print(f"cluster nranks={nranks} hosts={','.join(hosts)}", flush=True)
    result = lf.collect(engine=engine)
assert result.equals(lf.collect()), result
print(f"nranks={nranks} total={result['v'].sum()}", flush=True)
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
'''

RAISING_SCRIPT = """\
from distributed import Client

with Client() as client:
    assert len(client.scheduler_info()["workers"]) >= 1
raise ValueError("boom from the user script")
"""

SLEEPING_SCRIPT = """\
import time

from distributed import Client

with Client() as client:
    print(f"joined workers={len(client.scheduler_info()['workers'])}", flush=True)
    time.sleep(600)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class SlurmCluster:
    """A running single-host Slurm: ``env`` carries ``SLURM_CONF`` for srun/sbatch/scancel."""

    state: Path
    env: dict[str, str]

    def run(
        self, args: list[str], *, cwd: Path, timeout_s: float = 180
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command (srun, sbatch, ...) to completion."""
        return subprocess.run(
            args, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout_s
        )

    def wait_for_job(self, job_id: str, timeout_s: float = 120) -> dict[str, str]:
        """Poll ``scontrol show job`` until the job ended; return its fields."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run(
                ["scontrol", "show", "job", "-o", job_id],
                env=self.env,
                capture_output=True,
                text=True,
                check=False,
            ).stdout
            fields = dict(item.split("=", 1) for item in out.split() if "=" in item)
            if fields.get("JobState") in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"}:
                return fields
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} did not end within {timeout_s} s")


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    """A real Slurm (slurmctld + slurmd + munged) for the whole session."""
    missing = [name for name in ("slurmctld", "slurmd", "munged", "srun") if not _which(name)]
    if missing:
        pytest.skip(
            f"Slurm is not installed ({', '.join(missing)} missing): "
            "apt-get install -y --no-install-recommends slurm-wlm munge"
        )
    if os.geteuid() != 0:
        pytest.skip("starting slurmctld/slurmd/munged needs root")
    state = tmp_path_factory.mktemp("slurm-state")
    env = {
        **os.environ,
        "SLURM_TEST_STATE": str(state),
        "SLURM_TEST_CTLD_PORT": str(free_port()),
        "SLURM_TEST_SLURMD_PORT": str(free_port()),
        "SLURM_TEST_CLUSTER": f"test{uuid.uuid4().hex[:8]}",
    }
    started = subprocess.run(
        [str(SLURM_SCRIPTS / "start.sh")], env=env, capture_output=True, text=True, timeout=90
    )
    try:
        if started.returncode != 0:
            pytest.fail(f"Slurm did not start:\n{started.stdout}\n{started.stderr}")
        yield SlurmCluster(
            state=state,
            env={**os.environ, "SLURM_CONF": str(state / "slurm.conf"), "PYTHONPATH": str(REPO)},
        )
    finally:
        subprocess.run([str(SLURM_SCRIPTS / "stop.sh")], env=env, capture_output=True, timeout=90)


def _which(name: str) -> bool:
    return shutil.which(name) is not None or Path("/usr/sbin", name).exists()


DASK_DEFAULT_DASHBOARD_PORT = 8787


@pytest.fixture
def dashboard_port_taken() -> Iterator[int]:
    """Port 8787, distributed's default dashboard port, held as another job on the node would.

    If another process already holds it, it is taken all the same.
    """
    with socket.socket() as holder:
        try:
            holder.bind(("0.0.0.0", DASK_DEFAULT_DASHBOARD_PORT))
            holder.listen(1)
        except OSError:
            pass  # someone else holds it: taken all the same
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", DASK_DEFAULT_DASHBOARD_PORT))
            except OSError:
                pass
            else:
                pytest.fail(f"could not take port {DASK_DEFAULT_DASHBOARD_PORT} for the test")
        yield DASK_DEFAULT_DASHBOARD_PORT


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    """A working directory with the job scripts the tests run."""
    (tmp_path / "q.py").write_text(QUERY_SCRIPT)
    (tmp_path / "raising.py").write_text(RAISING_SCRIPT)
    (tmp_path / "sleeping.py").write_text(SLEEPING_SCRIPT)
    return tmp_path


def _launcher_command(*args: str) -> list[str]:
    """``python -m launcher.run ...`` with this interpreter and no dashboard."""
    return [sys.executable, "-m", "launcher.run", "--no-dashboard", *args]


def _processes_with_env(name: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment has ``name=value`` (a job's processes, as root)."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(name) == value and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


@dataclass(frozen=True)
class Tools:
    """Helpers shared by the launcher tests (``--import-mode=importlib`` forbids importing them)."""

    launcher_command: Callable[..., list[str]] = _launcher_command
    processes_with_env: Callable[[str, str], list[psutil.Process]] = _processes_with_env
    wait_until: Callable[[Callable[[], bool], float, str], None] = _wait_until

    @staticmethod
    def unique_marker() -> str:
        return uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def tools() -> Tools:
    return Tools()


GOLDEN = HERE / "golden"


def _assert_matches_golden(
    name: str,
    text: str,
    *,
    environ: Mapping[str, str] | None = None,
    golden: Path = GOLDEN,
) -> None:
    """Compare ``text`` with ``golden/<name>``: each changed line, and which file to delete.

    A missing record is written and the test still fails, naming the new file to review and
    commit: a golden test that passes on its first run proves nothing. In CI (``CI`` set to
    ``true`` or ``1``) nothing is written, because a record made there is never reviewed.
    """
    import difflib

    environ = os.environ if environ is None else environ
    record = golden / name
    if not record.exists():
        if environ.get("CI", "").lower() in {"true", "1"}:
            pytest.fail(
                f"golden record {_shown(record)} is missing, and CI does not write "
                "one: run this test locally, review the file it writes and commit it",
                pytrace=False,
            )
        golden.mkdir(exist_ok=True)
        record.write_text(text)
        pytest.fail(
            f"golden record {_shown(record)} was missing and has been written: "
            "review it, commit it and rerun the test",
            pytrace=False,
        )
    expected = record.read_text()
    if text != expected:
        diff = "\n".join(
            difflib.unified_diff(
                expected.splitlines(), text.splitlines(), "recorded", "rendered", lineterm=""
            )
        )
        pytest.fail(
            f"{name} differs from its golden record:\n{diff}\n"
            f"If the change is intended, delete {_shown(record)} and rerun the test (it "
            "writes the new record and fails once, so that you review it).",
            pytrace=False,
        )


def _shown(path: Path) -> Path:
    """``path`` relative to the checkout where it lies inside it (shorter messages)."""
    return path.relative_to(REPO) if path.is_relative_to(REPO) else path


@pytest.fixture(scope="session")
def assert_matches_golden() -> Callable[..., None]:
    return _assert_matches_golden
