"""The job as data: plans per rank, the exchange choice, the printed dry run, the options."""

from __future__ import annotations

import subprocess
import sys

import pytest

from launcher.options import LaunchOptions, parse_options
from launcher.spec import HostFacts, describe_plan, plan_job
from preload.ranks import detect_rank_info

SLURM_STEP = {
    "SLURM_PROCID": "5",
    "SLURM_NTASKS": "8",
    "SLURM_LOCALID": "1",
    "SLURM_NODEID": "1",
    "SLURM_STEP_ID": "0",
    "SLURM_JOB_ID": "4242",
    "SLURM_STEP_NODELIST": "gpu[01-02]",
    "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
}
HOST = 64 << 30


def facts(environ, mpi4py=False):
    return HostFacts(
        total_memory_bytes=HOST, available_cpus=32, mpi4py_importable=mpi4py, environ=environ
    )


def test_every_rank_runs_one_single_threaded_worker_with_its_share_of_memory():
    plans = plan_job(detect_rank_info(SLURM_STEP), LaunchOptions(script="q.py"), facts(SLURM_STEP))
    assert sorted(plans) == list(range(8))
    assert [plan.runs_scheduler for plan in plans.values()] == [True] + [False] * 7
    assert [plan.runs_script for plan in plans.values()] == [True] + [False] * 7
    worker = plans[5].worker
    assert (worker.name, worker.nthreads, worker.nanny, worker.preload_nanny) == ("5", 1, False, ())
    assert worker.memory_limit_bytes == HOST // 4
    assert worker.env["POLARS_MAX_THREADS"] == "8"


def test_nanny_option_runs_the_worker_under_a_nanny_with_the_preload():
    options = LaunchOptions(script="q.py", nanny=True)
    worker = plan_job(detect_rank_info(SLURM_STEP), options, facts(SLURM_STEP))[3].worker
    assert (worker.nanny, worker.preload_nanny) == (True, ("preload",))


def test_slurm_without_mpi_uses_the_rendezvous_on_the_first_node():
    plan = plan_job(detect_rank_info(SLURM_STEP), LaunchOptions(), facts(SLURM_STEP))[0]
    assert plan.exchange == "rendezvous"
    assert plan.rendezvous_host == "gpu01"
    assert plan.rendezvous_ports == (53940, 53941, 53942, 53943)
    assert plan.scheduler_interface is None  # two nodes: the host's address, not loopback


def test_single_node_job_binds_to_loopback():
    env = {
        **SLURM_STEP,
        "SLURM_NODEID": "0",
        "SLURM_STEP_TASKS_PER_NODE": "8",
        "SLURM_STEP_NODELIST": "gpu01",
    }
    plan = plan_job(detect_rank_info(env), LaunchOptions(), facts(env))[0]
    assert plan.scheduler_interface == "lo"
    assert plan.worker.interface == "lo"


def test_mpi_launchers_broadcast_when_mpi4py_is_there():
    env = {"PMI_RANK": "0", "PMI_SIZE": "4", "MPI_LOCALRANKID": "0", "MPI_LOCALNRANKS": "4"}
    assert (
        plan_job(detect_rank_info(env), LaunchOptions(), facts(env, mpi4py=True))[0].exchange
        == "mpi"
    )
    with pytest.raises(ValueError, match="pip install mpi4py"):
        plan_job(detect_rank_info(env), LaunchOptions(), facts(env, mpi4py=False))


def test_scheduler_file_wins_and_interfaces_pass_through(tmp_path):
    options = LaunchOptions(
        scheduler_file=tmp_path / "s.json", scheduler_interface="ib0", worker_interface="ib1"
    )
    plan = plan_job(detect_rank_info(SLURM_STEP), options, facts(SLURM_STEP))[3]
    assert (plan.exchange, plan.scheduler_interface, plan.worker.interface) == (
        "scheduler-file",
        "ib0",
        "ib1",
    )


def test_dry_run_of_a_slurm_step_matches_golden_record(assert_matches_golden):
    plans = plan_job(detect_rank_info(SLURM_STEP), LaunchOptions(script="q.py"), facts(SLURM_STEP))
    assert_matches_golden("dry-run-slurm.txt", describe_plan(plans) + "\n")


def test_options_security_by_default():
    assert parse_options([]).protocol == "tls"
    insecure = parse_options(["--insecure"])
    assert (insecure.protocol, insecure.insecure) == ("tcp", True)
    with pytest.raises(ValueError, match="pass --insecure as well"):
        LaunchOptions(protocol="tcp")


def test_options_expand_home_and_split_interfaces():
    options = parse_options(
        [
            "--scheduler-file",
            "~/s.json",
            "--interface",
            "ib0",
            "--worker-interface",
            "ib1",
            "q.py",
            "-x",
        ]
    )
    assert not str(options.scheduler_file).startswith("~")
    assert (options.scheduler_interface, options.worker_interface) == ("ib0", "ib1")
    assert (options.script, options.script_args) == ("q.py", ("-x",))


def test_command_line_help_and_dry_run_start_nothing():
    help_text = subprocess.run(
        [sys.executable, "-m", "launcher.run", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--scheduler-file" in help_text
    dry = subprocess.run(
        [sys.executable, "-m", "launcher.run", "--dry-run", "q.py"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin"},
    )
    assert dry.stdout.startswith("script: q.py\nexchange: local, protocol: tls")


def test_refuses_to_run_inside_rrun():
    done = subprocess.run(
        [sys.executable, "-m", "launcher.run", "--dry-run"],
        capture_output=True,
        text=True,
        env={"RRUN_RANK": "0"},
    )
    assert done.returncode != 0
    assert "cannot run inside an rrun cluster (RRUN_RANK=0 is set)" in done.stderr


def test_ucxx_without_its_package_names_the_fix():
    options = LaunchOptions(protocol="ucxx", insecure=True)
    with pytest.raises(ValueError, match="pip install distributed-ucxx-cu12"):
        plan_job(detect_rank_info(SLURM_STEP), options, facts(SLURM_STEP))


def test_every_command_line_option_has_a_description():
    from launcher.info import build_parser as info_parser
    from launcher.options import build_parser as run_parser

    for parser in (run_parser(), info_parser()):
        for action in parser._actions:
            assert action.help, f"{parser.prog} {action.option_strings or action.dest}: no help"
