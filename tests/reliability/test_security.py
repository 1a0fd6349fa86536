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
# The alerts a TLS server sends when it refuses the client's certificate (OpenSSL's names); a
# client-side failure (the client distrusting the server) or a dead scheduler raises no alert.
ALERT_UNKNOWN_CA = ("TLSV1_ALERT_UNKNOWN_CA",)
ALERT_NO_CERTIFICATE = ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE")


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


def handshake_reply(address: str, context: ssl.SSLContext | None, hello: bytes = b"") -> bytes:
    """Connect to ``address``, optionally through TLS, send ``hello``; return what comes back.

    Dask's listener writes its own handshake first, so a scheduler that accepts us answers with
    bytes at once; one that refuses closes or resets the connection (``b""``), or raises
    ``ssl.SSLError`` through TLS. Reads until the first bytes arrive or the peer closes, within
    a 10 s socket timeout.
    """
    host, port = address.split("://", 1)[1].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        if context is None:
            raw.sendall(hello)
            try:
                return raw.recv(64)
            except ConnectionResetError:
                return b""  # closed with unread bytes pending: the kernel sends a reset
        with context.wrap_socket(raw) as tls:
            tls.sendall(hello)
            return tls.recv(64)


def trusting_context(tls_job: TlsJob, cert_and_key: tuple[Path, Path] | None) -> ssl.SSLContext:
    """A client context that trusts the job's CA and presents ``cert_and_key`` if given."""
    context = ssl.create_default_context(cafile=str(tls_job.job_dir / "cert.pem"))
    context.check_hostname = False
    if cert_and_key is not None:
        context.load_cert_chain(*map(str, cert_and_key))
    return context


def assert_speaks_dask_to_the_jobs_certificate(tls_job: TlsJob) -> None:
    """The control of every refusal below: the same scheduler answers the job's own certificate.

    Without it, a dead scheduler would pass as one that refuses.
    """
    files = (tls_job.job_dir / "cert.pem", tls_job.job_dir / "key.pem")
    reply = handshake_reply(tls_job.address, trusting_context(tls_job, files))
    assert reply, "the scheduler closed a TLS connection that carried the job's own certificate"


def tls_alert(error: ssl.SSLError) -> str:
    """The TLS alert in an ``SSLError`` (``TLSV1_ALERT_UNKNOWN_CA``), or ``""`` if it is none."""
    reason = error.reason or ""
    return reason if "ALERT" in reason else ""


def test_the_scheduler_answers_only_tls(tls_job):
    """A Dask handshake in plain TCP gets no Dask handshake back: TLS is enforced, not advertised.

    Dask's listener speaks first, so a plain-TCP scheduler would answer at once with its own
    handshake. A TLS one reads our bytes as a broken ClientHello: a TLS alert record (type 0x15)
    or a closed connection.
    """
    assert tls_job.address.startswith("tls://")
    assert_speaks_dask_to_the_jobs_certificate(tls_job)
    dask_hello = b"\x01\x00\x00\x00\x00\x00\x00\x00" + b"\x00" * 16
    reply = handshake_reply(tls_job.address, None, dask_hello)
    assert reply[:1] in (b"", b"\x15"), f"plain TCP got a non-TLS answer: {reply!r}"


def test_a_client_with_another_jobs_certificate_is_refused(tls_job, tmp_path):
    """The scheduler checks client certificates against the job's CA: another job's is refused.

    The client trusts this job's certificate, so the refusal can only come from the server.
    """
    other = Security.temporary()
    cert, key = tmp_path / "other-cert.pem", tmp_path / "other-key.pem"
    cert.write_text(other.tls_client_cert)
    key.write_text(other.tls_client_key)
    assert_speaks_dask_to_the_jobs_certificate(tls_job)
    with pytest.raises(ssl.SSLError) as refused:
        handshake_reply(tls_job.address, trusting_context(tls_job, (cert, key)))
    assert tls_alert(refused.value) in ALERT_UNKNOWN_CA, refused.value


def test_a_client_that_trusts_the_job_but_has_no_certificate_is_refused(tls_job):
    """Knowing the job's public certificate is not enough: the scheduler wants the key.

    Raw TLS (Dask's own client refuses to even try without a certificate): the server ends the
    handshake with an alert, and nothing of Dask's protocol ever answers.
    """
    assert_speaks_dask_to_the_jobs_certificate(tls_job)
    with pytest.raises(ssl.SSLError) as refused:
        handshake_reply(tls_job.address, trusting_context(tls_job, None))
    assert tls_alert(refused.value) in ALERT_NO_CERTIFICATE, refused.value


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
