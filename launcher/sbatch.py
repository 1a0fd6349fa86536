"""``python -m launcher.sbatch``: render an sbatch script from a ``slurm/`` template; or submit it.

Rendering is a pure function of a frozen :class:`SbatchJob` (after submitit's
``_make_sbatch_string``); writing a file and calling ``sbatch`` are separate steps. The
templates ship as package data (``launcher.templates``) and explain every line in a comment.
"""

from __future__ import annotations

import argparse
import dataclasses
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

__all__ = ["TEMPLATES", "SbatchJob", "choose_template", "main", "render_sbatch", "submit"]

TEMPLATES: Final = ("single-node", "multi-node", "gpus-per-task", "cpu-only")
"""Template names; each is ``slurm/<name>.sbatch``."""

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
    cpus_per_task: int = 8
    """CPU cores per task (the worker's polars thread pool)."""
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
    python: str = "python"
    """Python executable on the compute nodes (e.g. a venv's ``bin/python``)."""
    launcher_args: tuple[str, ...] = ()
    """Options of ``python -m launcher.run`` (``--interface ib0``, ...)."""

    def __post_init__(self) -> None:
        if self.ntasks_per_node is None:
            object.__setattr__(self, "ntasks_per_node", self.gpus_per_node or 1)
        for name in ("nodes", "ntasks_per_node", "cpus_per_task"):
            if getattr(self, name) < 1:
                raise ValueError(f"SbatchJob.{name}={getattr(self, name)} must be at least 1")
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
    if job.partition:
        lines += ["# Partition (queue) to run in.", f"#SBATCH --partition={job.partition}"]
    if job.account:
        lines += ["# Account the job is charged to.", f"#SBATCH --account={job.account}"]
    return "\n".join(lines)


def _join_args(args: Sequence[str]) -> str:
    return "".join(" " + shlex.quote(arg) for arg in args)


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
    """The sbatch script for ``job``: a pure function of its fields (and the template text)."""
    text = Template(read_template(template or choose_template(job))).substitute(
        job_name=job.job_name,
        output=job.output,
        nodes=job.nodes,
        ntasks_per_node=job.ntasks_per_node,
        gpus_per_node=job.gpus_per_node,
        cpus_per_task=job.cpus_per_task,
        time=job.time,
        optional_directives=_optional_directives(job),
        python=shlex.quote(job.python),
        launcher_args="".join(shlex.quote(arg) + " " for arg in job.launcher_args),
        script=shlex.quote(job.script),
        script_args=_join_args(job.script_args),
    )
    return "\n".join(line for line in text.splitlines() if line) + "\n"


def submit(text: str, *, sbatch: str = "sbatch") -> str:
    """Submit a rendered script; return the job id sbatch printed."""
    result = subprocess.run(
        [sbatch, "--parsable"], input=text, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"sbatch refused the job (exit {result.returncode}): {result.stderr}")
    return result.stdout.strip().split(";")[0]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m launcher.sbatch",
        description="Render an sbatch script that runs SCRIPT with python -m launcher.run.",
    )
    parser.add_argument("script")
    parser.add_argument("script_args", nargs=argparse.REMAINDER)
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--gpus-per-node", type=int, default=0)
    parser.add_argument("--gpus-per-task", action="store_true")
    parser.add_argument("--ntasks-per-node", type=int)
    parser.add_argument("--cpus-per-task", type=int, default=8)
    parser.add_argument("--time", default="01:00:00")
    parser.add_argument("--job-name", default="polars-hpc")
    parser.add_argument("--output", default="%x-%j.out", help="Slurm log file pattern")
    parser.add_argument("--partition")
    parser.add_argument("--account")
    parser.add_argument("--python", default="python", help="python on the compute nodes")
    parser.add_argument(
        "--launcher-arg",
        action="append",
        default=[],
        dest="launcher_args",
        help="launcher.run option (repeat: --launcher-arg=--interface --launcher-arg=ib0)",
    )
    parser.add_argument("--template", choices=TEMPLATES, help="override the template choice")
    parser.add_argument("--write", type=Path, help="write the script to this file")
    parser.add_argument("--submit", action="store_true", help="submit it with sbatch")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Render (print, write or submit) one sbatch script."""
    parser = _parser()
    args = vars(parser.parse_args(argv))
    template, write, do_submit = args.pop("template"), args.pop("write"), args.pop("submit")
    args["script_args"] = tuple(args["script_args"])
    args["launcher_args"] = tuple(args["launcher_args"])
    try:
        job = SbatchJob.from_mapping(args)
    except ValueError as error:
        parser.error(str(error))
    text = render_sbatch(job, template)
    if write is not None:
        write.write_text(text)
    if do_submit:
        print(f"submitted job {submit(text)}")
    elif write is None:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
