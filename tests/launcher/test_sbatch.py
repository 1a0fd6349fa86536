"""sbatch rendering: golden records per template, choices, validation, the command line."""

from __future__ import annotations

import pytest

from launcher.sbatch import (
    TEMPLATES,
    SbatchJob,
    choose_template,
    main,
    read_template,
    render_sbatch,
)

JOBS = {
    "single-node": SbatchJob(script="query.py", gpus_per_node=8, cpus_per_task=12),
    "multi-node": SbatchJob(
        script="query.py",
        script_args=("--input", "/data/tpch sf100"),
        nodes=4,
        gpus_per_node=8,
        partition="gpu",
        account="proj42",
        time="02:00:00",
        python="/opt/venv/bin/python",
        launcher_args=("--interface", "ib0"),
    ),
    "gpus-per-task": SbatchJob(script="query.py", nodes=2, gpus_per_node=4, gpus_per_task=True),
    "cpu-only": SbatchJob(script="query.py", nodes=2, ntasks_per_node=4, partition="cpu"),
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


def test_rendering_is_pure():
    assert render_sbatch(JOBS["multi-node"]) == render_sbatch(JOBS["multi-node"])


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


def test_command_line_prints_the_script(capsys):
    assert main(["--nodes", "2", "--gpus-per-node", "4", "query.py", "--rows", "5"]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --nodes=2" in out
    assert out.rstrip().endswith("srun python -m launcher.run query.py --rows 5")
