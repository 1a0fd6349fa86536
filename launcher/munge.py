"""Seal and open secrets with MUNGE, the authentication service every Slurm cluster runs.

The Slurm rendezvous hands the job's TLS key to whoever connects to a port; sealing it with
``munge --restrict-uid`` means only processes of the same user can open it, and opening checks
that it was sealed by that user, so a rank cannot be fed another user's scheduler either.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

__all__ = ["MungeError", "munge_available", "open_sealed", "seal"]


class MungeError(RuntimeError):
    """MUNGE is missing, its daemon is down, or a credential is not this user's."""


def munge_available() -> bool:
    """True when the ``munge`` and ``unmunge`` commands exist (the daemon may still be down)."""
    return shutil.which("munge") is not None and shutil.which("unmunge") is not None


def seal(payload: str, *, ttl_s: int = 300) -> str:
    """A credential only this user can open, for ``ttl_s`` seconds."""
    result = subprocess.run(
        ["munge", "--restrict-uid", str(os.getuid()), "--ttl", str(ttl_s)],
        input=payload.encode(),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        raise MungeError(
            f"munge failed ({result.stderr.decode().strip()}): is munged running? "
            "Or pass --scheduler-file PATH on a shared filesystem"
        )
    return result.stdout.decode().strip()


def open_sealed(credential: str) -> str:
    """The payload of a credential this user sealed; ``MungeError`` otherwise."""
    with tempfile.NamedTemporaryFile(prefix="polars-hpc-munge-", mode="r") as metadata:
        result = subprocess.run(
            ["unmunge", "--numeric", "--keys", "UID", "--metadata", metadata.name],
            input=credential.encode(),
            capture_output=True,
            check=False,
        )
        uid_line = metadata.read().strip()
    if result.returncode != 0:
        raise MungeError(f"unmunge refused the rendezvous credential: {result.stderr.decode()}")
    sealed_by = uid_line.split(":")[-1].strip()
    if sealed_by != str(os.getuid()):
        raise MungeError(
            f"the rendezvous credential was sealed by uid {sealed_by}, not by you "
            f"(uid {os.getuid()}): another user's job holds the port"
        )
    return result.stdout.decode()
