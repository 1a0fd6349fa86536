"""Scheduler address exchange: scheduler files (stale ones skipped) and the Slurm rendezvous."""

from __future__ import annotations

import contextlib
import socket
import stat
import threading
import time

import pytest

from launcher.contact import ClusterContact, job_identity
from launcher.exchange import (
    GREETING,
    RendezvousServer,
    fetch_from_rendezvous,
    read_scheduler_file,
    remove_scheduler_file,
    write_scheduler_file,
)
from launcher.security import new_tls_key_pair

pytestmark = pytest.mark.timeout(60)


def contact(job: str, *, tls: bool = False) -> ClusterContact:
    cert, key = new_tls_key_pair() if tls else (None, None)
    return ClusterContact("tls://10.0.0.1:4000", job, 4, time.time(), cert, key)


def test_scheduler_file_is_private_and_round_trips(tmp_path):
    path = tmp_path / "sub" / "scheduler.json"
    written = contact("77.0", tls=True)
    write_scheduler_file(path, written)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    read = read_scheduler_file(path, is_current=lambda c: c.job == "77.0", timeout_s=1)
    assert read == written


def test_a_stale_scheduler_file_is_skipped_until_the_current_job_writes(tmp_path):
    path = tmp_path / "scheduler.json"
    write_scheduler_file(path, contact("76.0"))
    writer = threading.Timer(0.3, write_scheduler_file, (path, contact("77.0")))
    writer.start()
    read = read_scheduler_file(path, is_current=lambda c: c.job == "77.0", timeout_s=10)
    assert read.job == "77.0"


def test_only_a_stale_file_times_out_naming_it(tmp_path):
    path = tmp_path / "scheduler.json"
    write_scheduler_file(path, contact("76.0"))
    with pytest.raises(TimeoutError, match="holds job 76.0's scheduler .* an earlier job"):
        read_scheduler_file(path, is_current=lambda c: c.job == "77.0", timeout_s=0.3)


def test_job_identity_from_slurm_step():
    assert job_identity({"SLURM_JOB_ID": "9", "SLURM_STEP_ID": "1"}) == "9.1"


def test_insecure_rendezvous_hands_out_the_address_and_records_who_joined():
    server = RendezvousServer(contact("88.0"), [0])
    try:
        got = fetch_from_rendezvous("127.0.0.1", [server.port], job="88.0", rank=3, timeout_s=5)
        assert got.address == "tls://10.0.0.1:4000"
        assert 3 in server.joined
    finally:
        server.close()


def test_rendezvous_of_another_job_is_not_taken():
    server = RendezvousServer(contact("88.0"), [0])
    try:
        with pytest.raises(TimeoutError, match="found no scheduler at the rendezvous"):
            fetch_from_rendezvous("127.0.0.1", [server.port], job="99.0", rank=1, timeout_s=0.5)
    finally:
        server.close()


class ForeignListener:
    """A service on one of the derived ports that speaks first, as a Dask listener does.

    It sends binary with a newline and bytes that are not UTF-8, and records what it is sent.
    """

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.received = bytearray()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.socket.accept()
            except OSError:
                return
            self.connections.append(conn)  # held open, as a listener that misread us would
            conn.sendall(b"\x82\xa3op\xff\xfe\n\x93")
            conn.settimeout(0.5)
            with contextlib.suppress(OSError):
                self.received += conn.recv(1024)

    def close(self) -> None:
        self.socket.close()
        for conn in self.connections:
            conn.close()


def test_a_foreign_listener_on_a_derived_port_is_passed_over_and_told_nothing():
    foreign = ForeignListener()
    server = RendezvousServer(contact("88.0"), [0])
    try:
        started = time.monotonic()
        got = fetch_from_rendezvous(
            "127.0.0.1", [foreign.port, server.port], job="88.0", rank=1, timeout_s=10
        )
        assert got.job == "88.0"
        assert time.monotonic() - started < 3  # not a reply timeout per foreign port
        assert foreign.connections, "the foreign port was never tried"
        assert bytes(foreign.received) == b""
    finally:
        server.close()
        foreign.close()


def test_the_rendezvous_greets_before_it_reads():
    server = RendezvousServer(contact("88.0"), [0])
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as conn:
            assert conn.makefile("rb").readline() == GREETING
    finally:
        server.close()


@pytest.mark.slurm
def test_secure_rendezvous_seals_the_key_with_munge(slurm):
    """Needs munged, which the session's Slurm fixture starts (it skips where Slurm is missing)."""
    sent = contact("88.1", tls=True)
    server = RendezvousServer(sent, [0])
    try:
        got = fetch_from_rendezvous("127.0.0.1", [server.port], job="88.1", rank=1, timeout_s=5)
        assert got.tls_key_pem == sent.tls_key_pem
    finally:
        server.close()


def test_rendezvous_port_taken_falls_to_the_next_candidate():
    first = RendezvousServer(contact("1.0"), [0])
    try:
        second = RendezvousServer(contact("2.0"), [first.port, 0])
        assert second.port != first.port
        second.close()
    finally:
        first.close()


def test_a_scheduler_file_names_the_key_file_and_a_missing_one_is_named(tmp_path):
    with_key = contact("77.0", tls=True)
    key_file = tmp_path / "job" / "key.pem"
    written = with_key.without_key(key_file)
    write_scheduler_file(tmp_path / "scheduler.json", written)
    assert "PRIVATE KEY" not in (tmp_path / "scheduler.json").read_text()
    read = read_scheduler_file(tmp_path / "scheduler.json", is_current=lambda c: True, timeout_s=1)
    with pytest.raises(OSError, match=f"names its TLS key at {key_file}, which this host cannot"):
        read.with_key_loaded()
    key_file.parent.mkdir()
    key_file.write_text(with_key.tls_key_pem)
    assert read.with_key_loaded().tls_key_pem == with_key.tls_key_pem


def test_only_the_jobs_own_scheduler_file_is_removed(tmp_path):
    path = tmp_path / "scheduler.json"
    ours, later = contact("77.0"), contact("78.0")
    write_scheduler_file(path, later)
    assert not remove_scheduler_file(path, ours)
    assert path.exists()
    write_scheduler_file(path, ours)
    assert remove_scheduler_file(path, ours)
    assert not path.exists()
