"""The job's TLS cluster refuses strangers; its secrets are readable by the user only.

One real single-rank job (``python -m launcher.run`` as rank 0 of an MPICH-style job, joining
through a scheduler file) stays up while the tests knock on its scheduler.
"""

from __future__ import annotations

import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from distributed import Client
from distributed.security import Security

pytestmark = pytest.mark.timeout(120)

HERE = Path(__file__).parent
LAUNCHER_PREFIXES = ("SLURM_", "OMPI_", "PMI_", "MPI_", "MV2_", "PALS_", "FLUX_", "JSM_", "RRUN")


@dataclass
class TlsJob:
    address: str
    scheduler_file: Path
    jobs_root: Path
    job_dir: Path


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.fixture(scope="module")
def tls_job(tmp_path_factory) -> Iterator[TlsJob]:
    root = tmp_path_factory.mktemp("tls")
    markers = root / "markers"
    markers.mkdir()
    scheduler_file = root / "new-dir" / "scheduler.json"
    jobs_root = root / "jobs"
    env = {k: v for k, v in os.environ.items() if not k.startswith(LAUNCHER_PREFIXES)}
    env.update(PMI_RANK="0", PMI_SIZE="1", MPI_LOCALRANKID="0")
    command = [
        sys.executable,
        "-m",
        "launcher.run",
        "--scheduler-file",
        str(scheduler_file),
        "--job-dir",
        str(jobs_root),
        "--no-dashboard",
        str(HERE / "tls_job_script.py"),
        str(markers),
    ]
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not (markers / "address").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the job published no address"
            time.sleep(0.05)
        (job_dir,) = jobs_root.iterdir()
        yield TlsJob((markers / "address").read_text(), scheduler_file, jobs_root, job_dir)
        (markers / "done").touch()
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert not job_dir.exists(), "the job's key outlived the job"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_the_job_speaks_tls_only(tls_job):
    assert tls_job.address.startswith("tls://")


def test_a_client_with_another_jobs_certificate_is_refused(tls_job):
    with pytest.raises((OSError, TimeoutError)):
        Client(tls_job.address, security=Security.temporary(), timeout="3s")


def test_a_client_that_trusts_the_job_but_has_no_certificate_is_refused(tls_job):
    """Knowing the job's public certificate is not enough: the scheduler wants the key.

    Raw TLS (Dask's own client refuses to even try without a certificate): the handshake or
    the first read fails, nothing of Dask's protocol ever answers.
    """
    context = ssl.create_default_context(cafile=str(tls_job.job_dir / "cert.pem"))
    context.check_hostname = False
    host, port = tls_job.address.removeprefix("tls://").rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        pytest.raises((ssl.SSLError, ConnectionError)),
    ):
        talk_without_a_certificate(context, raw)


def talk_without_a_certificate(context: ssl.SSLContext, raw: socket.socket) -> None:
    """Handshake and one round trip; raises when the peer refuses at either point."""
    with context.wrap_socket(raw) as tls:
        tls.sendall(b"\0" * 8)
        if not tls.recv(1):
            raise ConnectionError("the scheduler closed the connection")


def test_plain_tcp_to_the_scheduler_port_is_refused(tls_job):
    with pytest.raises((OSError, TimeoutError)):
        Client(tls_job.address.replace("tls://", "tcp://"), timeout="3s")


def test_a_client_with_the_jobs_files_joins(tls_job):
    cert, key = str(tls_job.job_dir / "cert.pem"), str(tls_job.job_dir / "key.pem")
    security = Security(
        tls_ca_file=cert, tls_client_cert=cert, tls_client_key=key, require_encryption=True
    )
    with Client(tls_job.address, security=security, timeout="10s") as client:
        assert client.submit(sum, [1, 2], pure=False).result(timeout=30) == 3


def test_certificate_files_are_private(tls_job):
    assert mode(tls_job.job_dir) == "0o700"
    assert mode(tls_job.job_dir / "cert.pem") == "0o600"
    assert mode(tls_job.job_dir / "key.pem") == "0o600"
    assert mode(tls_job.scheduler_file) == "0o600"


def test_scheduler_address_file_in_the_job_dir_is_private(tls_job):
    assert mode(tls_job.job_dir / "scheduler-address") == "0o600"


def test_directory_the_launcher_creates_for_the_scheduler_file_is_private(tls_job):
    assert mode(tls_job.scheduler_file.parent) == "0o700"


def test_jobs_root_the_launcher_creates_is_private(tls_job):
    assert mode(tls_job.jobs_root) == "0o700"
