"""What the user asked ``python -m launcher.run`` for: one frozen, typed, validated object.

The command line is parsed into :class:`LaunchOptions` here and nowhere else, so planning
(:mod:`launcher.spec`) and doing (:mod:`launcher.run`) read typed fields, never ``argparse``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, get_args

__all__ = ["DEFAULT_SCRIPT", "LaunchOptions", "Protocol", "build_parser", "parse_options"]

Protocol = Literal["tls", "tcp", "ucxx"]

DEFAULT_SCRIPT: Final = "launcher.demo"
"""Module run when no script is given: the embedded default job."""

_INSECURE_PROTOCOLS: Final = ("tcp", "ucxx")


@dataclass(frozen=True, kw_only=True)
class LaunchOptions:
    """Launcher settings; every field has the command-line option of the same name.

    >>> LaunchOptions(protocol="tcp")
    Traceback (most recent call last):
    ...
    ValueError: protocol='tcp' sends data unencrypted and lets any local user join; pass ...
    """

    script: str | None = None
    """Path of the user's script; ``None`` runs :data:`DEFAULT_SCRIPT`."""
    script_args: tuple[str, ...] = ()
    """Arguments the script sees in ``sys.argv[1:]``."""
    protocol: Protocol = "tls"
    """Wire protocol of the cluster; ``tls`` unless ``insecure``."""
    insecure: bool = False
    """Turn TLS off (``tcp``): any user who can reach the port may then run code as you."""
    scheduler_interface: str | None = None
    """Network interface the scheduler binds to (``ib0``); default: the host's job address."""
    worker_interface: str | None = None
    """Network interface the workers bind to; default: as the scheduler."""
    scheduler_file: Path | None = None
    """Exchange the scheduler address through this file (a shared filesystem) instead."""
    dashboard_port: int | None = 8787
    """Port of the scheduler's dashboard (a free one if taken, or without bokeh);
    ``None``: no dashboard."""
    worker_timeout_s: float = 120.0
    """Seconds rank 0 waits for every worker to join before it gives up, naming the missing."""
    memory_limit_bytes: int | None = None
    """Memory limit of each worker; default: the node's budget (the smallest of RAM, the job's
    Slurm memory and the cgroup limit) / ranks on the node."""
    dry_run: bool = False
    """Print the plan of every rank and exit without starting anything."""
    log_level: str | None = None
    """Level of the project's loggers on every rank (``DEBUG`` ... ``CRITICAL``); ``None``:
    ``POLARS_HPC_LOG_LEVEL``, else ``INFO``."""
    nanny: bool = False
    """Run each rank's worker as a nanny-spawned process (with the ``preload`` module) instead
    of inside the rank: a worker that dies or leaks is restarted, at the cost of a second
    interpreter per rank (seconds of start-up on a busy node)."""
    job_dir: Path | None = field(default=None)
    """Private (0700) directory for per-job certificates; default: ``~/.polars-hpc/jobs``."""

    def __post_init__(self) -> None:
        if self.protocol not in get_args(Protocol):
            raise ValueError(
                f"protocol={self.protocol!r} is not one of {', '.join(get_args(Protocol))}"
            )
        if self.protocol in _INSECURE_PROTOCOLS and not self.insecure:
            raise ValueError(
                f"protocol={self.protocol!r} sends data unencrypted and lets any local user "
                "join; pass --insecure as well to accept that, or use --protocol tls"
            )
        if self.worker_timeout_s <= 0:
            raise ValueError(
                f"--worker-timeout: worker_timeout_s={self.worker_timeout_s} must be positive "
                "(seconds rank 0 waits for every worker, e.g. 120)"
            )
        if self.dashboard_port is not None and not 0 <= self.dashboard_port < 65536:
            raise ValueError(
                f"--dashboard-port: dashboard_port={self.dashboard_port} is not a TCP port "
                "(0 to 65535; 0 picks a free one), or pass --no-dashboard"
            )
        if self.memory_limit_bytes is not None and self.memory_limit_bytes <= 0:
            raise ValueError(
                f"--memory-limit: memory_limit_bytes={self.memory_limit_bytes} must be a "
                "positive number of bytes per worker (e.g. 17179869184 for 16 GiB); leave it "
                "out for the job's memory on the node / ranks on the node"
            )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m launcher.run`` command line."""
    parser = argparse.ArgumentParser(
        prog="python -m launcher.run",
        description=(
            "Run a Python script on a Dask cluster made of every rank of an srun/mpiexec "
            "job (each rank: one worker; rank 0 also the scheduler and the script). Outside "
            "a launcher: a local cluster. Without a script: the demo job (launcher.demo)."
        ),
        epilog=(
            "examples:\n"
            "  srun -N 2 --ntasks-per-node=4 --gpus-per-task=1 python -m launcher.run query.py\n"
            "  mpiexec -n 4 python -m launcher.run query.py --input /data\n"
            "  python -m launcher.run --dry-run query.py"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("script", nargs="?", help="Python script to run (default: the demo)")
    parser.add_argument(
        "-m",
        dest="module",
        metavar="MODULE",
        help="run a module as the script, as python -m does; what follows it goes to the module",
    )
    parser.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments of the script")
    parser.add_argument(
        "--protocol",
        choices=get_args(Protocol),
        help="cluster protocol (default: tls; tcp with --insecure)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="no TLS: any user who can reach the scheduler may run code as you",
    )
    parser.add_argument("--interface", help="network interface of scheduler and workers (ib0)")
    parser.add_argument("--scheduler-interface", help="network interface of the scheduler")
    parser.add_argument("--worker-interface", help="network interface of the workers")
    parser.add_argument(
        "--scheduler-file",
        type=Path,
        help="exchange the scheduler address through this file (needs a shared filesystem)",
    )
    parser.add_argument(
        "--dashboard-port",
        type=int,
        default=8787,
        help="dashboard port (default 8787; a free one when it is taken, 0 always a free one)",
    )
    parser.add_argument(
        "--no-dashboard",
        action="store_true",
        help="start no dashboard (the scheduler's HTTP server then takes any free port)",
    )
    parser.add_argument(
        "--worker-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long rank 0 waits for all workers (default 120)",
    )
    parser.add_argument(
        "--memory-limit",
        type=int,
        metavar="BYTES",
        help="memory limit per worker (default: the smallest of node RAM, the job's Slurm "
        "memory --mem/--mem-per-cpu and the cgroup limit, / ranks on the node)",
    )
    parser.add_argument(
        "--job-dir",
        type=Path,
        help="private directory for per-job TLS files (default ~/.polars-hpc)",
    )
    parser.add_argument(
        "--nanny",
        action="store_true",
        help="run each worker in a nanny-spawned process (restarted when it dies) instead of "
        "in the rank's own process (faster start-up, the default)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="print every rank's plan and start nothing"
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="level of the launcher/engine/preload loggers on every rank, also passed to the "
        "script's DaskEngine (default: $POLARS_HPC_LOG_LEVEL, else INFO)",
    )
    return parser


def parse_options(argv: Sequence[str] | None) -> LaunchOptions:
    """Parse a command line into :class:`LaunchOptions`; bad values exit with a usage error.

    As with ``python -m``, everything after ``-m MODULE`` belongs to the module:

    >>> parse_options(["--insecure", "q.py", "--rows", "5"]).script_args
    ('--rows', '5')
    >>> options = parse_options(["--insecure", "-m", "launcher.info", "--json"])
    >>> options.script, options.script_args
    ('-m launcher.info', ('--json',))
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    module_args: list[str] = []
    if "-m" in argv:
        at = argv.index("-m")
        argv, module_args = argv[: at + 2], argv[at + 2 :]
    args = parser.parse_args(argv)
    if args.module is not None:
        if args.script is not None:
            parser.error(f"give a script ({args.script!r}) or -m {args.module}, not both")
        args.script, args.script_args = f"-m {args.module}", module_args
    protocol = args.protocol or ("tcp" if args.insecure else "tls")
    try:
        return LaunchOptions(
            script=args.script,
            script_args=tuple(args.script_args),
            protocol=protocol,
            insecure=args.insecure,
            scheduler_interface=args.scheduler_interface or args.interface,
            worker_interface=args.worker_interface or args.interface,
            scheduler_file=args.scheduler_file.expanduser() if args.scheduler_file else None,
            dashboard_port=None if args.no_dashboard else args.dashboard_port,
            worker_timeout_s=args.worker_timeout,
            memory_limit_bytes=args.memory_limit,
            dry_run=args.dry_run,
            log_level=args.log_level,
            nanny=args.nanny,
            job_dir=args.job_dir.expanduser() if args.job_dir else None,
        )
    except ValueError as error:
        parser.error(str(error))
