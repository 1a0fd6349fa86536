"""The job's TLS identity: one key pair made per job, known only to the job's own processes.

Every scheduler, worker and client of the job presents the same self-signed certificate and
trusts only it, so a process without the key (another user on a shared node) is refused at the
TLS handshake. The pair is made like ``distributed.security.Security.temporary()`` makes its
own, and travels to the other ranks with the scheduler address (:mod:`launcher.exchange`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.contact import ClusterContact

if TYPE_CHECKING:
    from distributed.security import Security

__all__ = [
    "dask_config_for",
    "new_tls_key_pair",
    "remove_job_dir",
    "remove_stale_job_dirs",
    "security_for",
    "write_job_dir",
    "write_private",
]


OWNER_FILE = "owner.json"
"""Which process wrote a job directory: host, pid and that process's start time."""
CERT_VALID_DAYS = 30
"""Lifetime of a job's certificate; a job directory older than this is useless."""


def new_tls_key_pair(*, valid_days: int = CERT_VALID_DAYS) -> tuple[str, str]:
    """A fresh self-signed certificate and its private key, both PEM text.

    Like ``Security.temporary()`` (same subject, ``dask-internal``), but with an ECDSA P-256
    key: made in about a millisecond instead of the 0.1-0.2 s of an RSA-2048 key, on rank 0's
    path to a running scheduler.
    """
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dask-internal")])
    now = datetime.datetime.now(tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("dask-internal")]), False)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def security_for(contact: ClusterContact) -> Security | None:
    """The ``Security`` every role of the job uses; ``None`` for an insecure (tcp) job."""
    if contact.tls_cert_pem is None:
        return None
    from distributed.security import Security

    cert, key = contact.tls_cert_pem, contact.tls_key_pem
    return Security(
        require_encryption=True,
        tls_ca_file=cert,
        tls_client_cert=cert,
        tls_client_key=key,
        tls_scheduler_cert=cert,
        tls_scheduler_key=key,
        tls_worker_cert=cert,
        tls_worker_key=key,
    )


def dask_config_for(contact: ClusterContact) -> dict[str, Any]:
    """``dask.config`` settings that make a plain ``Client()`` and ``DaskEngine()`` join the job."""
    config: dict[str, Any] = {
        "polars-hpc.scheduler-address": contact.address,
        "scheduler-address": contact.address,
    }
    if contact.tls_cert_pem is not None:
        config.update(
            {
                "distributed.comm.require-encryption": True,
                "distributed.comm.tls.ca-file": contact.tls_cert_pem,
                "distributed.comm.tls.client.cert": contact.tls_cert_pem,
                "distributed.comm.tls.client.key": contact.tls_key_pem,
            }
        )
    return config


def write_job_dir(root: Path, contact: ClusterContact) -> Path:
    """Write the job's certificate and key to ``root/<job>/`` (0700), for clients outside it.

    A notebook on the login node can join with ``Security(tls_ca_file=dir/"cert.pem", ...)``.
    """
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory = root / (contact.job or f"pid-{os.getpid()}")
    directory.mkdir(mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    files = (
        ("cert.pem", contact.tls_cert_pem or ""),
        ("key.pem", contact.tls_key_pem or ""),
        ("scheduler-address", contact.address + "\n"),
        (OWNER_FILE, json.dumps(_this_process())),
    )
    for name, text in files:
        write_private(directory / name, text)
    return directory


def write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by this user only, whatever the umask (0600 from creation)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _this_process() -> dict[str, object]:
    import psutil

    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": psutil.Process().create_time(),
    }


def _owner_alive(owner: dict[str, object]) -> bool:
    """Whether the process that wrote the directory still runs (a reused pid does not count)."""
    import psutil

    try:
        process = psutil.Process(int(str(owner["pid"])))
        return abs(process.create_time() - float(str(owner["started"]))) < 1.0
    except (psutil.NoSuchProcess, KeyError, ValueError):
        return False


def _is_stale(directory: Path, host: str, now_s: float, max_age_s: float) -> bool:
    try:
        owner = json.loads((directory / OWNER_FILE).read_text())
    except (OSError, ValueError):
        owner = None
    if isinstance(owner, dict) and owner.get("host") == host:
        return not _owner_alive(owner)
    try:  # another host's job (a shared home) or an unknown writer: only its age tells
        return now_s - directory.stat().st_mtime > max_age_s
    except OSError:
        return False


def remove_stale_job_dirs(
    root: Path, *, max_age_s: float = CERT_VALID_DAYS * 86400.0, now_s: float | None = None
) -> list[Path]:
    """Delete job directories whose job is over but whose rank 0 could not clean up (SIGKILL).

    A directory is stale when the process that wrote it ran on this host and is gone, or,
    written on another host (the home directory may be shared by every node), when it is older
    than ``max_age_s``: by then its certificate has expired anyway. Running jobs' directories,
    here or on other nodes, are kept. Returns the directories removed.
    """
    if not root.is_dir():
        return []
    host, now_s = socket.gethostname(), time.time() if now_s is None else now_s
    removed = []
    for directory in root.iterdir():
        if directory.is_dir() and _is_stale(directory, host, now_s, max_age_s):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed


def remove_job_dir(directory: Path | None) -> None:
    """Delete a directory :func:`write_job_dir` made; the key must not outlive the job."""
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
