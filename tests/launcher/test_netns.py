"""Two "hosts" (network namespaces joined by a veth pair) form one cluster.

Ranks 0-1 run in one namespace, ranks 2-3 in the other; their rank information comes from plain
``SLURM_*`` variables, the scheduler address from a scheduler file, and every process binds to its
namespace's veth interface, so all cluster traffic crosses the veth link.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

pytestmark = [pytest.mark.root, pytest.mark.timeout(150)]


@dataclass(frozen=True)
class TwoHosts:
    namespaces: tuple[str, str]
    interfaces: tuple[str, str]
    addresses: tuple[str, str]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


@pytest.fixture
def two_hosts(tools) -> Iterator[TwoHosts]:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    if shutil.which("ip") is None:
        pytest.skip("the ip command (iproute2) is not installed")
    tag = tools.unique_marker()[:6]
    subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"
    hosts = TwoHosts(
        namespaces=(f"phpc_{tag}_a", f"phpc_{tag}_b"),
        interfaces=(f"vph{tag}a", f"vph{tag}b"),
        addresses=(f"{subnet}.1", f"{subnet}.2"),
    )
    created: list[str] = []
    try:
        for namespace in hosts.namespaces:
            _ip("netns", "add", namespace)
            created.append(namespace)
        _ip("link", "add", hosts.interfaces[0], "type", "veth", "peer", "name", hosts.interfaces[1])
        for namespace, interface, address in zip(
            hosts.namespaces, hosts.interfaces, hosts.addresses, strict=True
        ):
            _ip("link", "set", interface, "netns", namespace)
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", interface)
            _ip("-n", namespace, "link", "set", "lo", "up")
            _ip("-n", namespace, "link", "set", interface, "up")
        yield hosts
    finally:
        for namespace in created:
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, timeout=10)


def test_ranks_in_two_namespaces_form_one_cluster(two_hosts, job_dir, tools):
    job_id = str(random.randint(100_000, 999_999))
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_"))}
    steps = []
    for rank in range(4):
        node = rank // 2
        env = {
            **base,
            "SLURM_JOB_ID": job_id,
            "SLURM_STEP_ID": "0",
            "SLURM_PROCID": str(rank),
            "SLURM_NTASKS": "4",
            "SLURM_LOCALID": str(rank % 2),
            "SLURM_NODEID": str(node),
            "SLURM_STEP_NODELIST": ",".join(two_hosts.addresses),
            "SLURM_STEP_TASKS_PER_NODE": "2(x2)",
        }
        command = tools.launcher_command(
            "--scheduler-file",
            str(job_dir / "scheduler.json"),
            "--interface",
            two_hosts.interfaces[node],
            "q.py",
        )
        steps.append(
            subprocess.Popen(
                ["ip", "netns", "exec", two_hosts.namespaces[node], *command],
                cwd=job_dir,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [step.communicate(timeout=120) for step in steps]
    rank0_out, rank0_err = outputs[0]
    hosts = ",".join(f"tls://{address}" for address in two_hosts.addresses)
    assert f"cluster nranks=4 hosts={hosts}" in rank0_out, rank0_err
    assert "nranks=4 total=499500" in rank0_out, rank0_err + "".join(e for _, e in outputs[1:])
    assert [step.returncode for step in steps] == [0, 0, 0, 0], outputs
    assert f"scheduler at tls://{two_hosts.addresses[0]}:" in rank0_err
