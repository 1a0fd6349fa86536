"""Bootstrap across two "hosts": network namespaces joined by a veth pair, distinct host names.

Each namespace runs one worker under its own UTS namespace (``unshare --uts``) with its own host
name, so ranks are ordered by host name and the UCXX transport treats the pair as remote. The
scheduler and the client run in the first namespace. Needs root (skipped otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(240)]

VENV_BIN = Path(sys.executable).parent
CLIENT = Path(__file__).with_name("netns_client.py")


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str, str]]:
    """Namespaces ``<a>``, ``<b>`` joined by veth, addresses 10.123.N.1 and .2; always removed."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None or shutil.which("unshare") is None:
        pytest.skip("needs iproute2 (ip) and util-linux (unshare)")
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b = f"phcomm{tag}a", f"phcomm{tag}b"
    subnet = f"10.123.{os.getpid() % 250}"
    try:
        _ip("netns", "add", ns_a)
        _ip("netns", "add", ns_b)
        _ip("link", "add", f"vpc{tag}a", "type", "veth", "peer", "name", f"vpc{tag}b")
        for ns, side, host in ((ns_a, "a", 1), (ns_b, "b", 2)):
            _ip("link", "set", f"vpc{tag}{side}", "netns", ns)
            _ip("-n", ns, "addr", "add", f"{subnet}.{host}/24", "dev", f"vpc{tag}{side}")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", f"vpc{tag}{side}", "up")
        yield ns_a, ns_b, subnet
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


def _start(args: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_bootstrap_across_two_network_namespaces(two_hosts, tmp_path):
    ns_a, ns_b, subnet = two_hosts
    scheduler_file = tmp_path / "scheduler.json"
    dask = str(VENV_BIN / "dask")
    processes = [
        _start(
            [
                "ip",
                "netns",
                "exec",
                ns_a,
                dask,
                "scheduler",
                "--host",
                f"{subnet}.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(scheduler_file),
            ],
            tmp_path / "scheduler.log",
        )
    ]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert scheduler_file.exists(), (tmp_path / "scheduler.log").read_text()
        for ns, host, name in ((ns_b, 2, "node-b"), (ns_a, 1, "node-a")):
            worker = (
                f"hostname {name} && exec {dask} worker --scheduler-file {scheduler_file} "
                f"--host {subnet}.{host} --nthreads 1 --no-nanny --no-dashboard --name {name}"
            )
            processes.append(
                _start(
                    ["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c", worker],
                    tmp_path / f"{name}.log",
                )
            )
        client = subprocess.run(
            ["ip", "netns", "exec", ns_a, sys.executable, str(CLIENT), str(scheduler_file)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        logs = "\n".join(p.read_text() for p in tmp_path.glob("*.log"))
        assert client.returncode == 0, client.stderr[-4000:] + logs[-4000:]
        report = json.loads(client.stdout.strip().splitlines()[-1])
    finally:
        _stop(processes)
    size = 8 * 1024 * 1024
    for transport in ("ucxx", "tcp"):
        addresses = report[transport]["addresses"]
        assert [a.split("//")[1].split(":")[0] for a in addresses] == [f"{subnet}.1", f"{subnet}.2"]
        for result in report[transport]["results"]:
            assert result["hosts"] == ["node-a", "node-b"]
            assert result["received"] == [[size, 1, 1], [size, 2, 2]]
