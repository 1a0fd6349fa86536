"""The launcher under a real Slurm (the ``slurm`` fixture): answers, exit status, clean exits."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.mpi import mpich_segment_path
from launcher.sbatch import SbatchJob, render_sbatch

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(240)]


def test_srun_runs_the_query_on_four_ranks_and_returns_its_exit_status(slurm, job_dir, tools):
    done = slurm.run(["srun", "-n", "4", *tools.launcher_command("q.py", "3")], cwd=job_dir)
    assert "nranks=4 total=499500" in done.stdout, done.stderr
    assert done.returncode == 3, done.stderr
    assert "(rendezvous)" in done.stderr


def test_a_raising_script_fails_the_step_and_prints_its_traceback_once(slurm, job_dir, tools):
    done = slurm.run(["srun", "-n", "2", *tools.launcher_command("raising.py")], cwd=job_dir)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("ValueError: boom from the user script") == 1, done.stderr
    assert 'File "raising.py", line 5, in <module>' in done.stderr


def _next_job_id(slurm, cwd: Path) -> str:
    config = slurm.run(["scontrol", "show", "config"], cwd=cwd).stdout
    return next(line.split("=")[1].strip() for line in config.splitlines() if "NEXT_JOB_ID" in line)


def test_srun_with_pmi2_exchanges_the_address_over_mpi(slurm, job_dir, tools):
    # This step hung for good once a killed pmi2 job with the same job id (test clusters
    # restart ids at 1) had left its MPICH segment: plant one, as that job would have.
    stale = mpich_segment_path({"SLURM_JOB_ID": _next_job_id(slurm, job_dir), "SLURM_STEP_ID": "0"})
    stale.write_bytes(b"\0" * 4096)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    try:
        done = slurm.run(
            ["srun", "--mpi=pmi2", "-n", "4", *tools.launcher_command("q.py")],
            cwd=job_dir,
            timeout_s=150,
        )
    finally:
        stale.unlink(missing_ok=True)
    if "pmi2" in done.stderr and "plugin" in done.stderr.lower():
        pytest.skip(f"this Slurm has no usable mpi/pmi2 plugin: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr
    assert "nranks=4 total=499500" in done.stdout
    assert "(mpi)" in done.stderr


def test_nanny_option_runs_each_worker_in_its_own_process(slurm, job_dir, tools):
    done = slurm.run(["srun", "-n", "2", *tools.launcher_command("--nanny", "q.py")], cwd=job_dir)
    assert done.returncode == 0, done.stderr
    assert "nranks=2 total=499500" in done.stdout, done.stderr


def test_sbatch_of_a_rendered_template_completes(slurm, job_dir):
    job = SbatchJob(
        script="q.py",
        ntasks_per_node=2,
        cpus_per_task=1,
        time="00:05:00",
        python=sys.executable,
        launcher_args=("--no-dashboard", "--scheduler-file", "sched-%j.json"),
    )
    (job_dir / "job.sbatch").write_text(render_sbatch(job))
    submitted = slurm.run(["sbatch", "--parsable", "job.sbatch"], cwd=job_dir)
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()
    fields = slurm.wait_for_job(job_id)
    log = (job_dir / f"polars-hpc-{job_id}.out").read_text()
    assert fields["JobState"] == "COMPLETED", log
    assert fields["ExitCode"] == "0:0"
    assert "nranks=2 total=499500" in log
    assert f"(scheduler-file sched-{job_id}.json)" in log  # %j expanded as in --output


def _start_sleeping_job(slurm, job_dir: Path, tools, ntasks: int) -> tuple[subprocess.Popen, str]:
    """Start ``srun -n ntasks`` of a script that sleeps; return once all workers joined."""
    marker = tools.unique_marker()
    env = {**slurm.env, "POLARS_HPC_TEST_MARKER": marker}
    with (job_dir / "out.txt").open("w") as out, (job_dir / "err.txt").open("w") as err:
        step = subprocess.Popen(
            ["srun", "-n", str(ntasks), *tools.launcher_command("sleeping.py")],
            cwd=job_dir,
            env=env,
            stdout=out,
            stderr=err,
        )
    tools.wait_until(
        lambda: f"joined workers={ntasks}" in (job_dir / "out.txt").read_text(),
        120,
        f"{ntasks} ranks' workers to join",
    )
    return step, marker


def _rank_process(tools, marker: str, rank: int):
    for process in tools.processes_with_env("POLARS_HPC_TEST_MARKER", marker):
        is_rank = "launcher.run" in " ".join(process.cmdline())
        if is_rank and process.environ().get("SLURM_PROCID") == str(rank):
            return process
    raise AssertionError(f"no rank {rank} process")


def test_scancel_leaves_no_process_behind(slurm, job_dir, tools):
    step, marker = _start_sleeping_job(slurm, job_dir, tools, ntasks=2)
    job_id = _rank_process(tools, marker, 0).environ()["SLURM_JOB_ID"]
    cancelled_at = time.monotonic()
    slurm.run(["scancel", job_id], cwd=job_dir)
    tools.wait_until(
        lambda: not tools.processes_with_env("POLARS_HPC_TEST_MARKER", marker),
        10,
        "every process of the cancelled job to exit",
    )
    assert time.monotonic() - cancelled_at < 10
    step.wait(timeout=30)


def test_a_dead_worker_rank_stops_every_rank(slurm, job_dir, tools):
    step, marker = _start_sleeping_job(slurm, job_dir, tools, ntasks=3)
    _rank_process(tools, marker, 2).send_signal(signal.SIGKILL)
    step.wait(timeout=60)
    stderr = (job_dir / "err.txt").read_text()
    assert step.returncode != 0
    assert "the worker of rank 2" in stderr, stderr
    tools.wait_until(
        lambda: not tools.processes_with_env("POLARS_HPC_TEST_MARKER", marker),
        10,
        "every process of the failed job to exit",
    )


@pytest.mark.parametrize(
    ("memory_option", "per_worker_mb"),
    [("--mem=3000M", 1500), ("--mem-per-cpu=1000", 1000)],  # 1000 MB x 2 CPUs / 2 workers
)
def test_worker_memory_is_the_allocations_share_not_the_nodes(
    slurm, job_dir, tools, memory_option, per_worker_mb
):
    """``salloc --mem`` (or ``--mem-per-cpu``): each worker gets its share of the allocation."""
    info = tools.launcher_command("-m", "launcher.info", "--json")
    done = slurm.run(["salloc", "-n", "2", memory_option, "srun", *info], cwd=job_dir)
    assert done.returncode == 0, done.stderr
    records = json.loads(done.stdout[done.stdout.index("[") :])
    assert [record["memory_limit"] for record in records] == [per_worker_mb << 20] * 2


@pytest.mark.parametrize(
    ("options", "dashboard"),
    [
        ((), "not available (pip install 'bokeh>=3.1.0' for the dashboard)"),
        (("--no-dashboard",), "off (--no-dashboard)"),
    ],
)
def test_a_second_job_on_the_node_gets_no_port_warning(
    slurm, job_dir, dashboard_port_taken, options, dashboard
):
    """Port 8787 held (another job's dashboard): the scheduler takes a free port, silently."""
    if not options and importlib.util.find_spec("bokeh") is not None:
        dashboard = "http://127.0.0.1:"
    command = [sys.executable, "-m", "launcher.run", *options, "q.py"]
    done = slurm.run(["srun", "-n", "2", *command], cwd=job_dir)
    assert done.returncode == 0, done.stderr
    assert "already in use" not in done.stderr, done.stderr
    assert f"dashboard: {dashboard}" in done.stderr
    assert f":{dashboard_port_taken}/" not in done.stderr


WATCHING_SCRIPT = """\
import json
import stat
import sys
from pathlib import Path

from distributed import Client

record = json.loads(Path(sys.argv[1]).read_text())
with Client() as client:
    workers = len(client.scheduler_info()["workers"])
print(f"workers={workers} key in file={'PRIVATE KEY' in json.dumps(record)}", flush=True)
key_file = Path(record["tls_key_file"])
print(f"key file mode={oct(stat.S_IMODE(key_file.stat().st_mode))} at {key_file}", flush=True)
"""


def test_scheduler_file_holds_no_key_and_ends_with_the_job(slurm, job_dir, tools):
    """The ranks read the key from the private job directory; nothing of it outlives the job."""
    (job_dir / "watch.py").write_text(WATCHING_SCRIPT)
    scheduler_file, jobs = job_dir / "shared" / "sched.json", job_dir / "jobs"
    launcher = tools.launcher_command(
        "--scheduler-file", str(scheduler_file), "--job-dir", str(jobs), "watch.py"
    )
    done = slurm.run(["srun", "-n", "2", *launcher, str(scheduler_file)], cwd=job_dir)
    assert done.returncode == 0, done.stderr
    assert "workers=2 key in file=False" in done.stdout, done.stdout
    key_file = Path(done.stdout.split(" at ")[-1].strip())
    assert "key file mode=0o600" in done.stdout
    assert key_file.parent.parent == jobs
    assert f"(scheduler-file {scheduler_file})" in done.stderr
    assert not scheduler_file.exists(), "the scheduler file outlived the job"
    assert list(jobs.iterdir()) == [], "the job's TLS key outlived the job"
