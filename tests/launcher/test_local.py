"""``python -m launcher.run`` outside any launcher: a local, TLS-secured cluster for the script.

The strangers below must reach the scheduler and be refused *by it*: each one's refusal is
matched with the scheduler's own log line for that connection (by the stranger's port), so a
client that fails on its own configuration, before sending a byte, does not count.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

SCRIPT = """\
import asyncio
import socket
import ssl
import sys
import tempfile

import dask.config
from distributed import Client
from distributed.comm import connect
from distributed.security import Security

address = dask.config.get("scheduler-address")
host, port = address.removeprefix("tls://").rsplit(":", 1)
job_cert = dask.config.get("distributed.comm.tls.ca-file")


async def identity(target, **connection_args):
    comm = await connect(target, timeout=10, **connection_args)
    try:
        await comm.write({"op": "identity", "reply": True})
        return await comm.read()
    finally:
        comm.abort()


def knock(case, target, **connection_args):
    try:
        answer = asyncio.run(identity(target, **connection_args))
    except Exception as error:
        print(f"refused {case}: {type(error).__name__}: {error}", flush=True)
    else:
        sys.exit(f"{case} got in: {answer}")


client = Client()
try:
    print("plain client sees", len(client.scheduler_info()["workers"]), "workers", flush=True)
finally:
    client.close()

# 1. Dask without TLS at all (the client's own refusal switched off).
with dask.config.set({"distributed.comm.require-encryption": False}):
    knock("tcp", address.replace("tls://", "tcp://"))

# 2. Dask over TLS, trusting the job's certificate but presenting another job's.
stranger = Security.temporary()
with tempfile.NamedTemporaryFile("w", suffix=".pem") as ca:
    ca.write(job_cert)
    ca.flush()
    other_job = Security(
        tls_ca_file=ca.name,
        tls_client_cert=stranger.tls_client_cert,
        tls_client_key=stranger.tls_client_key,
        require_encryption=True,
    )
    knock("another job's certificate", address, **other_job.get_connection_args("client"))

# 3. Raw TLS that trusts the job but presents no certificate.
context = ssl.create_default_context(cadata=job_cert)
context.check_hostname = False
with socket.create_connection((host, int(port)), timeout=10) as raw:
    local_port = raw.getsockname()[1]
    try:
        with context.wrap_socket(raw) as tls:
            tls.sendall(bytes(8))
            tls.recv(1)
    except OSError as error:  # ssl.SSLError is one
        print(f"refused no certificate: local=tls://{host}:{local_port} {error!r}", flush=True)
    else:
        sys.exit("a TLS client without a certificate got an answer")
sys.exit(int(sys.argv[1]))
"""

REFUSALS = {
    # case: (what the stranger sees, what the scheduler logged for the stranger's port).
    # The scheduler's line is the proof; what the stranger sees depends on whether the
    # scheduler's TLS alert arrives before its close (both seen on the loaded 2-core machine).
    "tcp": (r"CommClosedError: .*Connection reset by peer", r"WRONG_VERSION_NUMBER"),
    "another job's certificate": (r"CommClosedError", r"CERTIFICATE_VERIFY_FAILED"),
    "no certificate": (
        r"TLSV13_ALERT_CERTIFICATE_REQUIRED|SSLEOFError|ConnectionResetError",
        r"PEER_DID_NOT_RETURN_A_CERTIFICATE",
    ),
}


def test_local_cluster_refuses_strangers_itself_and_passes_exit_status(tmp_path):
    (tmp_path / "s.py").write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, "-m", "launcher.run", "--no-dashboard", "s.py", "5"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 5, done.stdout + done.stderr
    assert "plain client sees" in done.stdout, done.stdout
    for case, (client_error, server_log) in REFUSALS.items():
        seen = re.search(rf"refused {case}: .*local=\w+://127\.0\.0\.1:(\d+).*", done.stdout)
        assert seen, f"{case}: not refused\n{done.stdout}"
        assert re.search(client_error, seen.group(0)), seen.group(0)
        refused_by_scheduler = (
            rf"TLS handshake failed with remote 'tls://127\.0\.0\.1:{seen.group(1)}': "
            rf"\[SSL: {server_log}\]"
        )
        assert re.search(refused_by_scheduler, done.stderr), (
            f"{case}: the scheduler logged no refusal of port {seen.group(1)}\n{done.stderr}"
        )


QUIET_SCRIPT = "print('script ran')\n"


def _run_local(tmp_path, *options: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "quiet.py").write_text(QUIET_SCRIPT)
    done = subprocess.run(
        [sys.executable, "-m", "launcher.run", *options, "quiet.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.returncode == 0, done.stderr
    assert "script ran" in done.stdout
    return done


def _dashboard_line(stderr: str) -> str:
    return re.search(r"dashboard: (.*)", stderr).group(1)


def test_the_dashboard_link_is_logged_only_when_it_works(tmp_path, dashboard_port_taken):
    done = _run_local(tmp_path)
    assert "already in use" not in done.stderr, done.stderr
    if importlib.util.find_spec("bokeh") is None:
        assert _dashboard_line(done.stderr) == (
            "not available (pip install 'bokeh>=3.1.0' for the dashboard)"
        )
        assert "http://" not in done.stderr
        return
    link = _dashboard_line(done.stderr)  # with bokeh: the page must be the dashboard
    assert link.startswith("http://127.0.0.1:"), link
    assert f":{dashboard_port_taken}/" not in link


def test_no_dashboard_means_no_port_8787_and_no_warning(tmp_path, dashboard_port_taken):
    done = _run_local(tmp_path, "--no-dashboard")
    assert "already in use" not in done.stderr, done.stderr
    assert _dashboard_line(done.stderr) == "off (--no-dashboard)"
