"""Worker memory from the job's allocation: recorded cgroup trees, Slurm's variables, the plan."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.memory import node_memory_budget, read_cgroup_memory_limit, slurm_memory_limit_bytes
from launcher.options import LaunchOptions
from launcher.spec import HostFacts, plan_job
from preload.ranks import detect_rank_info

pytestmark = pytest.mark.timeout(30)

CGROUPS = Path(__file__).parent / "cgroups"
MB = 1 << 20
GIB = 1 << 30


@pytest.mark.parametrize(
    ("tree", "limit"),
    [
        ("v2-slurm", 1500 * MB),  # on job_42, under step/user/task cgroups without one
        ("v1-slurm", 2 * GIB),  # the step's 2 GiB below the job's 3 GiB
        ("v1-container", 8 * GIB),  # the mount's top is the container's own cgroup
        ("v2-unlimited", None),
    ],
)
def test_cgroup_limit_is_the_smallest_on_the_path(tree, limit):
    assert read_cgroup_memory_limit(CGROUPS / tree) == limit


def test_no_cgroup_file_means_no_limit(tmp_path):
    assert read_cgroup_memory_limit(tmp_path) is None


def test_host_facts_read_the_cgroup_under_the_given_root():
    facts = HostFacts.of_this_host({}, root=CGROUPS / "v2-slurm")
    assert facts.cgroup_memory_limit_bytes == 1500 * MB


@pytest.mark.parametrize(
    ("environ", "limit"),
    [
        ({"SLURM_MEM_PER_NODE": "1500"}, 1500 * MB),
        ({"SLURM_MEM_PER_CPU": "1000", "SLURM_CPUS_ON_NODE": "4"}, 4000 * MB),
        ({"SLURM_MEM_PER_NODE": "0"}, None),  # --mem=0: all of the node
        ({"SLURM_MEM_PER_CPU": "1000"}, None),  # CPUs on the node unknown
        ({}, None),
    ],
)
def test_slurm_memory_per_node_and_per_cpu(environ, limit):
    assert slurm_memory_limit_bytes(environ) == limit


def test_budget_is_the_smallest_known_limit():
    assert node_memory_budget(16 * GIB, {"SLURM_MEM_PER_NODE": "1500"}, None) == 1500 * MB
    assert node_memory_budget(16 * GIB, {"SLURM_MEM_PER_NODE": "9000"}, 2 * GIB) == 2 * GIB
    assert node_memory_budget(1 * GIB, {"SLURM_MEM_PER_NODE": "9000"}, None) == GIB


SALLOC_STEP = {
    "SLURM_PROCID": "1",
    "SLURM_NTASKS": "2",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "0",
    "SLURM_STEP_ID": "0",
    "SLURM_JOB_ID": "42",
    "SLURM_STEP_NODELIST": "localhost",
    "SLURM_STEP_TASKS_PER_NODE": "2",
    "SLURM_CPUS_ON_NODE": "2",
}


@pytest.mark.parametrize(
    ("extra", "cgroup", "per_worker"),
    [
        ({"SLURM_MEM_PER_NODE": "1500"}, None, 750 * MB),  # the salloc --mem=1500M
        ({"SLURM_MEM_PER_CPU": "500"}, None, 500 * MB),  # 500 MB x 2 CPUs / 2 workers
        ({"SLURM_MEM_PER_NODE": "1500"}, 1000 * MB, 500 * MB),  # the cgroup is smaller
        ({}, None, 8 * GIB),  # nothing but the node's RAM
    ],
)
def test_each_worker_gets_its_share_of_the_jobs_memory(extra, cgroup, per_worker):
    environ = {**SALLOC_STEP, **extra}
    host = HostFacts(16 * GIB, 2, False, environ, cgroup_memory_limit_bytes=cgroup)
    plans = plan_job(detect_rank_info(environ), LaunchOptions(script="q.py"), host)
    assert {plan.worker.memory_limit_bytes for plan in plans.values()} == {per_worker}
