"""sbatch rendering: golden records per template, choices, validation, the command line."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.sbatch import (
    TEMPLATES,
    SbatchJob,
    _parser,
    choose_template,
    main,
    read_template,
    render_sbatch,
)

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]

JOBS = {
    "single-node": SbatchJob(
        script="query.py", gpus_per_node=8, cpus_per_task=12, mem="512G", python="python3"
    ),
    "multi-node": SbatchJob(
        script="query.py",
        script_args=("--input", "/data/tpch sf100"),
        nodes=4,
        gpus_per_node=8,
        partition="gpu",
        account="proj42",
        time="02:00:00",
        python="/opt/venv/bin/python",
        launcher_args=("--interface", "ib0", "--scheduler-file", "$SCRATCH/sched-%j.json"),
    ),
    "gpus-per-task": SbatchJob(
        script="query.py", nodes=2, gpus_per_node=4, gpus_per_task=True, python="python3"
    ),
    "cpu-only": SbatchJob(
        script="query.py", nodes=2, ntasks=7, ntasks_per_node=4, partition="cpu", python="python3"
    ),
}


@pytest.mark.parametrize("name", TEMPLATES)
def test_rendered_script_matches_golden_record(name, assert_matches_golden):
    job = JOBS[name]
    assert choose_template(job) == name
    assert_matches_golden(f"{name}.sbatch", render_sbatch(job))


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_line_is_explained_by_a_comment(name):
    lines = read_template(name).splitlines()
    for number, line in enumerate(lines[1:], start=1):
        explained = line.startswith(("# ", "${")) or lines[number - 1].startswith("# ")
        assert explained, f"{name}.sbatch line {number + 1} has no comment above it: {line!r}"


def test_rendering_reads_nothing_but_the_job():
    """Another process, directory and environment (venv, PATH, job variables) render the same."""
    job = JOBS["multi-node"]
    code = (
        "import json, sys; from launcher.sbatch import SbatchJob, render_sbatch; "
        "print(render_sbatch(SbatchJob(**json.loads(sys.argv[1]))), end='')"
    )
    fields = {name: getattr(job, name) for name in job.__dataclass_fields__}
    env = {
        "PATH": "/nonexistent",
        "PYTHONPATH": str(REPO),
        "VIRTUAL_ENV": "/elsewhere",
        "SLURM_JOB_ID": "99",
        "SCRATCH": "/scratch",
    }
    other = subprocess.run(
        [sys.executable, "-c", code, json.dumps(fields)],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert other.stdout == render_sbatch(job)


def test_arguments_are_shell_quoted():
    text = render_sbatch(JOBS["multi-node"])
    assert "query.py --input '/data/tpch sf100'" in text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"script": "q.py", "nodes": 0}, "nodes=0 must be at least 1"),
        ({"script": "q.py", "gpus_per_task": True}, "needs GPUs: pass gpus_per_node"),
        ({"script": "q.py", "time": "forever"}, "time='forever' is not"),
        ({"script": "q.py", "gpu": 1}, "unknown SbatchJob parameter.*valid: script .*nodes=1"),
    ],
)
def test_bad_parameters_are_named_with_the_fix(params, message):
    with pytest.raises(ValueError, match=message):
        SbatchJob.from_mapping(params)


NO_SLURM: dict[str, str] = {"PATH": "/nonexistent"}
"""An environment without ``sinfo``: rendering works, the partition check is left out."""


def test_command_line_prints_the_script_for_this_interpreter(capsys):
    argv = ["--nodes", "2", "--gpus-per-node", "4", "query.py", "--rows", "5"]
    assert main(argv, environ=NO_SLURM) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --nodes=2" in out
    assert "#SBATCH --ntasks=8" in out
    python = shlex.quote(sys.executable)
    assert out.rstrip().endswith(f"srun {python} -m launcher.run query.py --rows 5")


def test_every_option_has_a_description():
    for action in _parser()._actions:
        assert action.help, f"{action.option_strings or action.dest} has no --help text"
    helped = subprocess.run(
        [sys.executable, "-m", "launcher.sbatch", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "--launcher-arg ARG" in helped.stdout
    assert f"(default: this interpreter, {sys.executable})" in " ".join(helped.stdout.split())


def test_launcher_arg_takes_its_value_as_the_next_word(capsys):
    argv = ["--launcher-arg", "--interface", "--launcher-arg", "ib0", "q.py", "--launcher-arg"]
    assert main(argv, environ=NO_SLURM) == 0
    assert "-m launcher.run --interface ib0 q.py --launcher-arg\n" in capsys.readouterr().out


def _srun_words(text: str, environ: dict[str, str]) -> list[str]:
    """The words ``srun`` gets when the rendered script runs: its last line, run by bash."""
    srun_line = text.rstrip().splitlines()[-1]
    shell = f"set -euo pipefail; srun() {{ printf '%s\\n' \"$@\"; }}; {srun_line}"
    done = subprocess.run(
        ["bash", "-c", shell], env=environ, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def test_job_variables_expand_when_the_job_runs_and_nothing_else_does():
    job = SbatchJob(
        script="$HOME/q.py",
        script_args=("--day", "%j", "--run", "${SLURM_JOB_ID}", "a b", "*", "$(id)", "100%"),
        python="python3",
        launcher_args=("--scheduler-file", "$SCRATCH/sched-%j-%x-%u.json", "--job-dir", "%%j"),
    )
    environ = {
        "HOME": "/home/ada",
        "SCRATCH": "/scratch/ada",
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "polars-hpc",
        "USER": "ada",
        "PATH": os.environ["PATH"],
    }
    words = _srun_words(render_sbatch(job), environ)
    assert words == [
        "python3",
        "-m",
        "launcher.run",
        "--scheduler-file",
        "/scratch/ada/sched-4242-polars-hpc-ada.json",
        "--job-dir",
        "%j",
        "/home/ada/q.py",
        "--day",
        "%j",  # a script argument: sbatch's patterns are for file names, this may be a date
        "--run",
        "4242",
        "a b",
        "*",
        "$(id)",
        "100%",
    ]


def test_an_unset_job_variable_stops_the_job_naming_it():
    job = SbatchJob(script="q.py", python="python3", launcher_args=("--job-dir", "$NOPE/x"))
    srun_line = render_sbatch(job).rstrip().splitlines()[-1]
    done = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; srun() {{ :; }}; {srun_line}"],
        env={},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert "NOPE: unbound variable" in done.stderr


@pytest.mark.parametrize("template", ["gpus-per-task", "single-node", "multi-node"])
def test_a_gpu_template_for_a_job_without_gpus_is_refused(template, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--template", template, "q.py"], environ=NO_SLURM)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"template '{template}' asks Slurm for GPUs, but the job has gpus_per_node=0" in err
    assert "--gpus-per-node N" in err
    assert "--template cpu-only" in err


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"script": "q.py", "nodes": 2, "ntasks": 9, "ntasks_per_node": 4}, "ntasks=9 does not"),
        ({"script": "q.py", "nodes": 3, "ntasks": 2}, "ntasks=2 does not fit nodes=3"),
        ({"script": "q.py", "mem": "lots"}, "--mem 'lots' is not a Slurm memory size"),
    ],
)
def test_task_counts_and_memory_are_checked(params, message):
    with pytest.raises(ValueError, match=message):
        SbatchJob.from_mapping(params)


def test_ntasks_alone_spreads_over_the_nodes():
    job = SbatchJob(script="q.py", nodes=2, ntasks=5)
    assert (job.ntasks, job.ntasks_per_node) == (5, 3)
    assert re.search(r"(?m)^#SBATCH --ntasks=5$", render_sbatch(job))


def _sbatch_cli(slurm, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m launcher.sbatch ARGS`` against the test Slurm, as a user runs it."""
    return slurm.run([sys.executable, "-m", "launcher.sbatch", *args], cwd=cwd, timeout_s=60)


def _queued(slurm, cwd: Path) -> list[str]:
    return slurm.run(["squeue", "-h", "-o", "%i"], cwd=cwd).stdout.split()


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_a_request_bigger_than_the_partition_warns_at_render_and_submit(slurm, job_dir):
    """The test node has 8 CPUs and 16000 MB; such a job would sit PENDING for good."""
    too_big = ["--ntasks-per-node", "2", "--cpus-per-task", "8", "--mem", "12000", "q.py"]
    rendered = _sbatch_cli(slurm, job_dir, *too_big)
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stderr.splitlines() == [
        "python -m launcher.sbatch: warning: the job asks for 16 CPUs per node (2 task(s) x "
        "--cpus-per-task 8), but the largest node of partition debug has 8: it would stay "
        "PENDING; lower --cpus-per-task or --ntasks-per-node"
    ]
    submitted = _sbatch_cli(slurm, job_dir, "--submit", "--time", "00:01:00", *too_big)
    job_id = submitted.stdout.removeprefix("submitted job ").strip()
    try:
        assert submitted.returncode == 0, submitted.stderr
        assert "would stay PENDING" in submitted.stderr
    finally:
        slurm.run(["scancel", job_id], cwd=job_dir)
    fits = _sbatch_cli(slurm, job_dir, "--ntasks-per-node", "2", "--cpus-per-task", "4", "q.py")
    assert fits.returncode == 0
    assert fits.stderr == ""


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_gpus_on_a_partition_without_gpus_are_refused_in_one_line(slurm, job_dir):
    before = _queued(slurm, job_dir)
    args = ["--submit", "--template", "gpus-per-task", "--gpus-per-node", "1", "q.py"]
    refused = _sbatch_cli(slurm, job_dir, *args)
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "python -m launcher.sbatch: error: partition debug has no GPUs (sinfo lists no gpu gres "
        "on its 1 node(s)), but the job asks for 1 GPU(s) per node (one per task: "
        "--gpus-per-task): pass --partition with a GPU partition (sinfo -o '%P %G'), or "
        "--gpus-per-node 0 for the cpu-only template"
    ]
    assert _queued(slurm, job_dir) == before


@pytest.mark.slurm
@pytest.mark.timeout(120)
def test_sbatch_refusal_reaches_the_user_as_one_line(slurm, job_dir):
    refused = _sbatch_cli(slurm, job_dir, "--submit", "--partition", "nosuch", "q.py")
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    *warnings, error = refused.stderr.splitlines()
    assert warnings == [
        "python -m launcher.sbatch: warning: sinfo lists no nodes in partition nosuch: check the "
        "name (sinfo -s lists the partitions), or leave --partition out for the default one"
    ]
    assert error.startswith("python -m launcher.sbatch: error: sbatch refused the job (exit 1): ")
    assert "invalid partition specified: nosuch" in error, error
