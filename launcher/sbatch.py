"""``python -m launcher.sbatch``: render an sbatch script from a ``slurm/`` template; or submit it.

Rendering is a pure function of a frozen :class:`SbatchJob` (after submitit's
``_make_sbatch_string``); writing a file and calling ``sbatch`` are separate steps. The
templates ship as package data (``launcher.templates``) and explain every line in a comment.

Job variables in arguments expand when the job runs, as users write them in batch scripts:
``$NAME`` and ``${NAME}`` everywhere (script, its arguments, launcher options), and sbatch's
file-name patterns ``%j`` (job id), ``%x`` (job name), ``%u`` (user) and ``%%`` in launcher
options, which name files (``--scheduler-file sched-%j.json``). Nothing else of the shell
applies: no globbing, splitting or command substitution.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any, Final

from launcher.jobvars import FILENAME_PATTERNS, shell_word
from launcher.sinfo import (
    PartitionRequest,
    check_request,
    gpu_refusal,
    parse_memory_mb,
    partition_nodes,
    read_sinfo_nodes,
)

__all__ = [
    "FILENAME_PATTERNS",
    "GPU_TEMPLATES",
    "TEMPLATES",
    "SbatchJob",
    "SbatchRefusedError",
    "choose_template",
    "main",
    "partition_request",
    "render_sbatch",
    "shell_word",
    "submit",
]

TEMPLATES: Final = ("single-node", "multi-node", "gpus-per-task", "cpu-only")
"""Template names; each is ``slurm/<name>.sbatch``."""

GPU_TEMPLATES: Final = frozenset({"single-node", "multi-node", "gpus-per-task"})
"""Templates that ask Slurm for GPUs: they need ``gpus_per_node >= 1``."""

_TIME: Final = re.compile(r"^(\d+-)?\d{1,2}(:\d{2}){0,2}$")


@dataclass(frozen=True, kw_only=True)
class SbatchJob:
    """One batch job: the allocation and what runs in it.

    >>> SbatchJob(script="q.py", nodes=2, gpus_per_node=4).ntasks_per_node
    4
    """

    script: str
    """The user's script (path as the compute nodes see it)."""
    script_args: tuple[str, ...] = ()
    """Arguments of the script."""
    nodes: int = 1
    """Nodes to allocate."""
    gpus_per_node: int = 0
    """GPUs per node; 0 renders the CPU-only template."""
    gpus_per_task: bool = False
    """Ask Slurm for one GPU per task (``--gpus-per-task=1``) instead of per node."""
    ntasks_per_node: int | None = None
    """Tasks (Dask workers) per node; default: one per GPU, else one."""
    ntasks: int | None = None
    """Tasks (Dask workers) in all; default: ``nodes * ntasks_per_node``."""
    cpus_per_task: int = 8
    """CPU cores per task (the worker's polars thread pool)."""
    mem: str | None = None
    """Memory per node (``--mem``: ``16G``, ``1500M``; ``0`` all of it); default: the
    partition's. The workers of a node split it evenly."""
    time: str = "01:00:00"
    """Wall-clock limit, ``[D-]HH:MM:SS``."""
    job_name: str = "polars-hpc"
    """Job name shown by squeue."""
    output: str = "%x-%j.out"
    """Log file (Slurm's ``%x`` job name, ``%j`` job id)."""
    partition: str | None = None
    """Partition; default: the cluster's default partition."""
    account: str | None = None
    """Account to charge; default: the user's default account."""
    python: str = sys.executable or "python"
    """Python executable on the compute nodes; default: the one rendering the script (with
    an activated venv, the venv's ``bin/python``), so the job runs what was installed."""
    launcher_args: tuple[str, ...] = ()
    """Options of ``python -m launcher.run`` (``--interface ib0``, ...)."""

    def __post_init__(self) -> None:
        if self.ntasks_per_node is None:
            per_node = -(-self.ntasks // self.nodes) if self.ntasks else self.gpus_per_node or 1
            object.__setattr__(self, "ntasks_per_node", per_node)
        assert self.ntasks_per_node is not None
        if self.ntasks is None:
            object.__setattr__(self, "ntasks", self.nodes * self.ntasks_per_node)
        for name in ("nodes", "ntasks", "ntasks_per_node", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"SbatchJob.{name}={getattr(self, name)} must be at least 1")
        assert self.ntasks is not None
        if not self.nodes <= self.ntasks <= self.nodes * self.ntasks_per_node:
            raise ValueError(
                f"SbatchJob.ntasks={self.ntasks} does not fit nodes={self.nodes} x "
                f"ntasks_per_node={self.ntasks_per_node}: give each node at least one task and "
                "at most ntasks_per_node (or leave ntasks_per_node out)"
            )
        if self.mem is not None:
            parse_memory_mb(self.mem)
        if self.gpus_per_node < 0:
            raise ValueError(f"SbatchJob.gpus_per_node={self.gpus_per_node} must be >= 0")
        if self.gpus_per_task and self.gpus_per_node == 0:
            raise ValueError(
                "SbatchJob.gpus_per_task=True needs GPUs: pass gpus_per_node=N (N >= 1)"
            )
        if not _TIME.match(self.time):
            raise ValueError(f"SbatchJob.time={self.time!r} is not [D-]HH:MM:SS")

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any]) -> SbatchJob:
        """Build from a mapping; unknown names raise ``ValueError`` listing every valid one.

        >>> SbatchJob.from_mapping({"script": "q.py", "gpu": 2})
        Traceback (most recent call last):
        ...
        ValueError: unknown SbatchJob parameter(s) gpu; valid: script (required), ...
        """
        fields = {spec.name: spec for spec in dataclasses.fields(cls)}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            menu = ", ".join(
                f"{name} (required)"
                if spec.default is dataclasses.MISSING
                else f"{name}={spec.default!r}"
                for name, spec in fields.items()
            )
            raise ValueError(f"unknown SbatchJob parameter(s) {', '.join(unknown)}; valid: {menu}")
        return cls(**params)


def choose_template(job: SbatchJob) -> str:
    """The template for ``job``: CPU-only, per-task GPUs, one node, or several.

    >>> choose_template(SbatchJob(script="q.py", nodes=2, gpus_per_node=8))
    'multi-node'
    """
    if job.gpus_per_node == 0:
        return "cpu-only"
    if job.gpus_per_task:
        return "gpus-per-task"
    return "single-node" if job.nodes == 1 else "multi-node"


def _optional_directives(job: SbatchJob) -> str:
    lines = []
    if job.mem is not None:
        lines += [
            "# Memory per node of the job (the workers of a node split it).",
            f"#SBATCH --mem={job.mem}",
        ]
    if job.partition:
        lines += ["# Partition (queue) to run in.", f"#SBATCH --partition={job.partition}"]
    if job.account:
        lines += ["# Account the job is charged to.", f"#SBATCH --account={job.account}"]
    return "\n".join(lines)


def _join_args(args: Sequence[str], *, filename_patterns: bool = False) -> str:
    return "".join(" " + shell_word(arg, filename_patterns=filename_patterns) for arg in args)


def read_template(name: str) -> str:
    """The text of template ``name`` from the package data (``slurm/`` in a checkout)."""
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; choose one of {', '.join(TEMPLATES)}")
    try:
        return resources.files("launcher.templates").joinpath(f"{name}.sbatch").read_text()
    except ModuleNotFoundError:
        checkout = Path(__file__).resolve().parent.parent / "slurm" / f"{name}.sbatch"
        return checkout.read_text()


def render_sbatch(job: SbatchJob, template: str | None = None) -> str:
    """The sbatch script for ``job``: a pure function of its fields (and the template text).

    A GPU template for a job without GPUs raises ``ValueError``: it would ask Slurm for GPUs
    the user did not mean to (or could not) get.
    """
    template = template or choose_template(job)
    if template in GPU_TEMPLATES and job.gpus_per_node == 0:
        raise ValueError(
            f"template {template!r} asks Slurm for GPUs, but the job has gpus_per_node=0: "
            "pass --gpus-per-node N (N >= 1), or --template cpu-only for a job without GPUs"
        )
    text = Template(read_template(template)).substitute(
        job_name=job.job_name,
        output=job.output,
        nodes=job.nodes,
        ntasks=job.ntasks,
        ntasks_per_node=job.ntasks_per_node,
        gpus_per_node=job.gpus_per_node,
        cpus_per_task=job.cpus_per_task,
        time=job.time,
        optional_directives=_optional_directives(job),
        python=shlex.quote(job.python),
        launcher_args=_join_args(job.launcher_args, filename_patterns=True).lstrip() + " "
        if job.launcher_args
        else "",
        script=shell_word(job.script),
        script_args=_join_args(job.script_args),
    )
    return "\n".join(line for line in text.splitlines() if line) + "\n"


class SbatchRefusedError(RuntimeError):
    """``sbatch`` refused the job; the message is sbatch's own error, on one line."""


def submit(text: str, *, sbatch: str = "sbatch", environ: Mapping[str, str] | None = None) -> str:
    """Submit a rendered script; return the job id sbatch printed.

    Raises :class:`SbatchRefusedError` with sbatch's error lines joined into one (its
    ``sbatch: error:`` prefixes dropped), so the user reads Slurm's reason, not a traceback.
    """
    try:
        result = subprocess.run(
            [sbatch, "--parsable"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
            env=None if environ is None else dict(environ),
        )
    except OSError as error:
        raise SbatchRefusedError(
            f"cannot run {sbatch!r} ({error.strerror}): submit from a node with Slurm's "
            "commands, or --write FILE and sbatch FILE there"
        ) from None
    if result.returncode != 0:
        reasons = [
            line.strip().removeprefix("sbatch: error: ").strip()
            for line in result.stderr.splitlines()
            if line.strip()
        ]
        raise SbatchRefusedError(
            f"sbatch refused the job (exit {result.returncode}): "
            + ("; ".join(reasons) or "no message")
        )
    return result.stdout.strip().split(";")[0]


def partition_request(job: SbatchJob, template: str) -> PartitionRequest:
    """What ``job`` asks of each node, in the terms ``sinfo`` reports (for the fit check)."""
    assert job.ntasks_per_node is not None
    per_task_gpus = template == "gpus-per-task"
    gpus = (
        0
        if template not in GPU_TEMPLATES
        else job.ntasks_per_node
        if per_task_gpus
        else (job.gpus_per_node)
    )
    return PartitionRequest(
        nodes=job.nodes,
        cpus_per_node=job.ntasks_per_node * job.cpus_per_task,
        gpus_per_node=gpus,
        memory_mb=parse_memory_mb(job.mem) if job.mem is not None else None,
        how={
            "cpus": f"{job.ntasks_per_node} task(s) x --cpus-per-task {job.cpus_per_task}",
            "gpus": "one per task: --gpus-per-task" if per_task_gpus else "--gpus-per-node",
            "memory": "--mem",
        },
    )


OPTIONS: Final[tuple[tuple[str, dict[str, Any]], ...]] = (
    ("--nodes", {"type": int, "default": 1, "help": "nodes to allocate (default 1)"}),
    (
        "--gpus-per-node",
        {
            "type": int,
            "default": 0,
            "help": "GPUs per node (default 0: the cpu-only template, CPU workers)",
        },
    ),
    (
        "--gpus-per-task",
        {
            "action": "store_true",
            "help": "ask Slurm for one GPU per task (--gpus-per-task=1) instead of per node",
        },
    ),
    (
        "--ntasks",
        {
            "type": int,
            "help": "tasks (Dask workers) in all (default: nodes x tasks per node)",
        },
    ),
    (
        "--ntasks-per-node",
        {
            "type": int,
            "help": "tasks (Dask workers) per node (default: one per GPU, else one; with "
            "--ntasks: ntasks / nodes, rounded up)",
        },
    ),
    (
        "--cpus-per-task",
        {
            "type": int,
            "default": 8,
            "help": "CPU cores per task, its worker's polars threads (default 8; checked "
            "against sinfo)",
        },
    ),
    (
        "--mem",
        {
            "help": "memory per node, e.g. 64G (default: the partition's); the workers of a "
            "node split it",
        },
    ),
    ("--time", {"default": "01:00:00", "help": "wall-clock limit [D-]HH:MM:SS (default 1 h)"}),
    ("--job-name", {"default": "polars-hpc", "help": "job name shown by squeue (%%x)"}),
    (
        "--output",
        {"default": "%x-%j.out", "help": "log file of all ranks (default %%x-%%j.out)"},
    ),
    ("--partition", {"help": "partition to run in (default: the cluster's default)"}),
    ("--account", {"help": "account to charge (default: your default account)"}),
    (
        "--python",
        {
            "default": sys.executable or "python",
            "help": "python on the compute nodes (default: this interpreter, %(default)s)",
        },
    ),
    (
        "--launcher-arg",
        {
            "action": "append",
            "default": [],
            "dest": "launcher_args",
            "metavar": "ARG",
            "help": "one option word of python -m launcher.run; repeat it: --launcher-arg "
            "--scheduler-file --launcher-arg '$SCRATCH/sched-%%j.json' ($VAR, %%j, %%x, %%u "
            "expand in the job)",
        },
    ),
    ("--template", {"choices": TEMPLATES, "help": "use this template instead of the usual choice"}),
    ("--write", {"type": Path, "metavar": "FILE", "help": "write the script to FILE"}),
    (
        "--submit",
        {"action": "store_true", "help": "submit it with sbatch and print the job id"},
    ),
)
"""The command line, one row per option (``--help`` shows each description)."""

_VALUE_OPTIONS: Final = frozenset(
    flag for flag, spec in OPTIONS if spec.get("action") not in ("store_true", "append")
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m launcher.sbatch",
        description="Render an sbatch script that runs SCRIPT with python -m launcher.run; "
        "check it against the partition (sinfo); print, write or submit it.",
        epilog="example: python -m launcher.sbatch --nodes 2 --gpus-per-node 4 --partition gpu "
        "--launcher-arg --interface --launcher-arg ib0 --submit query.py /data",
    )
    parser.add_argument("script", help="the script to run (path as the compute nodes see it)")
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments of the script")
    for flag, spec in OPTIONS:
        parser.add_argument(flag, **spec)
    return parser


def _attach_launcher_args(argv: Sequence[str]) -> list[str]:
    """Turn ``--launcher-arg X`` into ``--launcher-arg=X``, up to the script.

    argparse reads a value that starts with ``-`` (``--launcher-arg --interface``) as the next
    option; the joined form is unambiguous. The script and what follows are left alone.

    >>> _attach_launcher_args(["--launcher-arg", "--interface", "--nodes", "2", "q.py",
    ...                        "--launcher-arg", "x"])
    ['--launcher-arg=--interface', '--nodes', '2', 'q.py', '--launcher-arg', 'x']
    """
    out: list[str] = []
    tokens = list(argv)
    while tokens:
        token = tokens.pop(0)
        if token == "--launcher-arg" and tokens:
            out.append(f"--launcher-arg={tokens.pop(0)}")
        elif token in _VALUE_OPTIONS and tokens:
            out += [token, tokens.pop(0)]
        elif token == "--" or not token.startswith("-"):
            return [*out, token, *tokens]
        else:
            out.append(token)
    return out


def _check_against_partition(
    job: SbatchJob, template: str, environ: Mapping[str, str], *, submitting: bool
) -> str | None:
    """Warn (stderr) about what the partition cannot give; the refusal when submitting."""
    facts = read_sinfo_nodes(environ)
    if facts is None:  # no Slurm here: render anyway, sbatch checks at submission
        return None
    nodes = partition_nodes(facts, job.partition)
    partition = job.partition or next((n.partition for n in facts if n.default_partition), "?")
    request = partition_request(job, template)
    refusal = gpu_refusal(request, nodes, partition)
    if refusal is not None and submitting:
        return refusal
    for problem in [refusal] if refusal else check_request(request, nodes, partition):
        print(f"python -m launcher.sbatch: warning: {problem}", file=sys.stderr)
    return None


def main(argv: Sequence[str] | None = None, *, environ: Mapping[str, str] | None = None) -> int:
    """Render (print, write or submit) one sbatch script; 0, or 1 when sbatch refused it."""
    environ = os.environ if environ is None else environ
    parser = _parser()
    args = vars(parser.parse_args(_attach_launcher_args(sys.argv[1:] if argv is None else argv)))
    template, write, do_submit = args.pop("template"), args.pop("write"), args.pop("submit")
    args["script_args"] = tuple(args["script_args"])
    args["launcher_args"] = tuple(args["launcher_args"])
    try:
        job = SbatchJob.from_mapping(args)
        template = template or choose_template(job)
        text = render_sbatch(job, template)
    except ValueError as error:
        parser.error(str(error))
    refusal = _check_against_partition(job, template, environ, submitting=do_submit)
    if refusal is not None:
        print(f"python -m launcher.sbatch: error: {refusal}", file=sys.stderr)
        return 2
    if write is not None:
        write.write_text(text)
    if do_submit:
        try:
            job_id = submit(text, environ=environ)
        except SbatchRefusedError as error:
            print(f"python -m launcher.sbatch: error: {error}", file=sys.stderr)
            return 1
        print(f"submitted job {job_id}")
    elif write is None:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
