"""How ranks learn the scheduler's address: MPI broadcast, Slurm rendezvous, or a file.

Rank 0 starts the scheduler and *publishes* a :class:`launcher.contact.ClusterContact`; every
other rank *fetches* it. Three channels, chosen by :func:`launcher.spec.plan_job`:

- MPI broadcast when the ranks share an MPI world (no filesystem needed);
- a rendezvous on the first host of ``SLURM_STEP_NODELIST``, on ports derived from the job and
  step id, the secret part sealed with MUNGE (:mod:`launcher.munge`). Those ports lie in the
  kernel's ephemeral range, so another program (a Dask listener of this very user, say) may hold
  one: the rendezvous greets first with :data:`GREETING`, and a rank says nothing to a port that
  does not greet so;
- a scheduler file (``--scheduler-file``), written atomically with mode 0600; a file left by an
  earlier job is recognised by its job id or age and waited past, never used. It names the TLS
  key's file in the private job directory instead of holding the key, and rank 0 deletes it
  when the job ends.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from launcher.contact import ClusterContact
from launcher.munge import MungeError, open_sealed, seal
from launcher.security import write_private

__all__ = [
    "GREETING",
    "RendezvousServer",
    "fetch_from_rendezvous",
    "mpi_share_contact",
    "read_scheduler_file",
    "remove_scheduler_file",
    "write_scheduler_file",
]

_POLL_S = 0.05
_REPLY_TIMEOUT_S = 30.0
"""How long a rendezvous answer may take (a loaded node's munged can take seconds)."""
_GREETING_TIMEOUT_S = 5.0
"""How long a rank waits for the greeting: it needs no munge, only a thread to accept."""

_MAX_LINE = 1 << 20
"""Longest request or reply line read: a contact with its sealed TLS key is a few KiB."""

GREETING = b"polars-hpc-rendezvous 1\n"
"""The first line a rendezvous sends on every connection, before it reads anything.

A rank sends its request only after this line: a foreign service that took one of the derived
ports never receives bytes it would misread, and the rank moves on at once instead of waiting
out a reply that never comes.
"""


def mpi_share_contact(
    contact: ClusterContact | None, comm: Any, timeout_s: float
) -> tuple[ClusterContact, list[str]]:
    """Broadcast rank 0's contact; also gather every rank's host name (for error messages).

    The ranks meet in :func:`launcher.mpi.wait_for_all` first, so the broadcast never waits
    spinning, and a rank gives up after ``timeout_s`` when another never arrives.
    """
    from launcher.mpi import wait_for_all

    wait_for_all(comm, timeout_s)
    text = comm.bcast(contact.to_json() if contact is not None else None, root=0)
    hosts = comm.allgather(socket.gethostname())
    return ClusterContact.from_json(text), hosts


class RendezvousServer:
    """Rank 0's side: serve the contact on the first free candidate port, in a thread.

    Each connection sends one JSON line ``{"rank", "host", "job"}`` and gets the contact back,
    sealed with MUNGE when it holds a TLS key. ``joined`` records who asked, so a timeout can name
    the ranks that never arrived.
    """

    def __init__(self, contact: ClusterContact, ports: Sequence[int]) -> None:
        self.contact = contact
        self.joined: dict[int, str] = {}
        self._lock = threading.Lock()
        self._socket = self._bind(ports)
        self.port = self._socket.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="rendezvous", daemon=True)
        self._thread.start()

    @staticmethod
    def _bind(ports: Sequence[int]) -> socket.socket:
        errors = []
        for port in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind(("", port))
            except OSError as error:
                sock.close()
                errors.append(f"{port}: {error.strerror}")
                continue
            sock.listen(128)
            return sock
        raise RuntimeError(
            f"no rendezvous port free ({'; '.join(errors)}); pass --scheduler-file PATH instead"
        )

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return
            # one thread per request: sealing calls munge, slow on a loaded node
            threading.Thread(target=self._answer_safely, args=(conn,), daemon=True).start()

    def _answer_safely(self, conn: socket.socket) -> None:
        with conn:
            try:
                self._answer(conn)
            except Exception as error:  # one bad request must not stop the rendezvous
                logging.getLogger("launcher").warning("rendezvous request failed: %s", error)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(_REPLY_TIMEOUT_S)
        conn.sendall(GREETING)
        request = json.loads(conn.makefile("rb").readline(_MAX_LINE))
        if request["job"] != self.contact.job:
            conn.sendall(b"error: job " + self.contact.job.encode() + b"\n")
            return
        with self._lock:
            self.joined[int(request["rank"])] = str(request["host"])
        text = self.contact.to_json()
        reply = f"munge:{seal(text)}" if self.contact.tls_key_pem else f"plain:{text}"
        conn.sendall(reply.encode() + b"\n")

    def close(self) -> None:
        """Stop serving; idempotent."""
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()


def _ask(host: str, port: int, request: bytes) -> str | None:
    """One rendezvous attempt: the reply line, or ``None`` when nobody (right) listens yet.

    Replies are read as bytes and decoded last: whatever a foreign listener sends must not
    raise here, it only makes this port the wrong one.
    """
    try:
        with socket.create_connection((host, port), timeout=_GREETING_TIMEOUT_S) as conn:
            conn.settimeout(_GREETING_TIMEOUT_S)
            lines = conn.makefile("rb")
            if lines.readline(len(GREETING)) != GREETING:
                return None
            conn.settimeout(_REPLY_TIMEOUT_S)
            conn.sendall(request)
            reply = lines.readline(_MAX_LINE).decode().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return reply if reply.startswith(("munge:", "plain:")) else None


def fetch_from_rendezvous(
    host: str, ports: Sequence[int], *, job: str, rank: int, timeout_s: float
) -> ClusterContact:
    """Ask rank 0's rendezvous for the contact until ``timeout_s`` passes."""
    request = json.dumps({"rank": rank, "host": socket.gethostname(), "job": job}).encode() + b"\n"
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while time.monotonic() < deadline:
        for port in ports:
            reply = _ask(host, port, request)
            if reply is None:
                continue
            kind, _, body = reply.partition(":")
            try:
                contact = ClusterContact.from_json(open_sealed(body) if kind == "munge" else body)
            except (MungeError, ValueError) as error:  # a busy munged, another job's record
                last_error = f"; last error: {error}"
                continue
            if contact.job == job:
                return contact
        time.sleep(_POLL_S)
    raise TimeoutError(
        f"rank {rank} found no scheduler at the rendezvous {host} ports "
        f"{','.join(map(str, ports))} within {timeout_s:.0f} s: did rank 0 start (it must run "
        "on the first node of the step)? Or pass --scheduler-file PATH on a shared filesystem"
        + last_error
    )


def write_scheduler_file(path: Path, contact: ClusterContact) -> None:
    """Write the contact atomically, readable by this user only.

    The launcher passes a contact without its private key (:meth:`ClusterContact.without_key`);
    the file is still private, as it tells where the job's key lies.

    Folders the launcher has to create for it are 0700 as well: the file's name is no secret,
    but a private folder keeps other users from watching jobs come and go.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    write_private(partial, contact.to_json())
    os.replace(partial, path)


def remove_scheduler_file(path: Path, contact: ClusterContact) -> bool:
    """Delete the scheduler file if it still holds ``contact`` (not a later job's); say if so."""
    with contextlib.suppress(OSError, ValueError):
        if ClusterContact.from_json(path.read_text()) == contact:
            path.unlink()
            return True
    return False


def read_scheduler_file(
    path: Path,
    *,
    is_current: Callable[[ClusterContact], bool],
    timeout_s: float,
) -> ClusterContact:
    """Wait for a scheduler file that ``is_current`` accepts; older jobs' files are skipped."""
    deadline = time.monotonic() + timeout_s
    seen_stale: ClusterContact | None = None
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            contact = ClusterContact.from_json(path.read_text())
            if is_current(contact):
                return contact
            seen_stale = contact
        time.sleep(_POLL_S)
    stale = (
        f" (it holds job {seen_stale.job or '?'}'s scheduler {seen_stale.address}, an earlier job:"
        " delete it or use another path)"
        if seen_stale
        else ""
    )
    raise TimeoutError(f"no scheduler file of this job at {path} after {timeout_s:.0f} s{stale}")
