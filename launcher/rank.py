"""One rank of a launched job, from start to exit status: what :func:`launcher.run.main` runs.

Rank 0 starts the scheduler, publishes its contact, runs a worker, waits for all workers, runs
the script and announces its exit status to every rank. The other ranks fetch the contact, run
a worker and wait for that announcement, or notice that rank 0 is gone. Either way the rank
returns an exit status; on SIGTERM or a lost worker it cleans up within seconds and exits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.cluster import (
    ExitBoard,
    LoopThread,
    WorkerLossWatch,
    prepare_in_process_worker,
    start_in_process_worker,
    start_nanny,
    start_scheduler,
    wait_for_exit_status,
    wait_for_workers,
    wait_for_workers_to_leave,
)
from launcher.contact import ClusterContact, job_identity
from launcher.dashboard import BOKEH_HINT, dashboard_works
from launcher.exchange import (
    RendezvousServer,
    fetch_from_rendezvous,
    mpi_share_contact,
    read_scheduler_file,
    remove_scheduler_file,
    write_scheduler_file,
)
from launcher.network import bind_address
from launcher.script import run_script
from launcher.security import (
    dask_config_for,
    new_tls_key_pair,
    remove_job_dir,
    remove_stale_job_dirs,
    security_for,
    write_job_dir,
)
from preload.assign import GpuAssignmentError
from preload.ranks import detect_rank_info

if TYPE_CHECKING:
    import logging
    from collections.abc import Mapping

    from distributed import Nanny, Scheduler, Worker

    from launcher.options import LaunchOptions
    from launcher.spec import RankPlan

__all__ = ["RankRun", "kill_process"]

TEARDOWN_TIMEOUT_S = 8.0
"""Rank clean-up budget: below Slurm's default KillWait (30 s) and the 10 s the job promises."""
STALE_FILE_SLACK_S = 60.0


def kill_process(pid: int | None, timeout_s: float = TEARDOWN_TIMEOUT_S / 2) -> None:
    """SIGKILL ``pid`` (a worker process of this rank) and wait until it is gone."""
    if pid is None:
        return
    import psutil

    deadline = time.monotonic() + timeout_s
    try:
        process = psutil.Process(pid)
        process.kill()
        # poll instead of wait(): the nanny's own watcher thread reaps its child
        while process.status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
            time.sleep(0.01)
    except psutil.NoSuchProcess:
        return


@dataclass
class RankRun:
    """The live state of one rank; :meth:`run` returns the rank's exit status."""

    plan: RankPlan
    options: LaunchOptions
    environ: Mapping[str, str]
    logger: logging.Logger
    comm: Any = None
    started_s: float = field(default_factory=time.time)
    _loop: LoopThread | None = None
    _scheduler: Scheduler | None = None
    _worker: Nanny | Worker | None = None
    _watch: WorkerLossWatch | None = None
    _rendezvous: RendezvousServer | None = None
    _job_dir: Path | None = None
    _scheduler_file_contact: ClusterContact | None = None
    _hosts: dict[int, str] = field(default_factory=dict)
    _board: ExitBoard | None = None
    _aborting: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> int:
        """Realise this rank's plan and return its exit status."""
        self._install_signal_handlers()
        self._patient_connections()
        self._warn_if_pinned_to_one_cpu()
        if not self.plan.worker.nanny:
            try:
                prepare_in_process_worker(self.plan.worker)
            except GpuAssignmentError as error:
                self.logger.error("%s", error)
                return 1
        self._loop = LoopThread()
        try:
            if self.plan.runs_scheduler:
                return self._run_rank_zero()
            return self._run_worker_rank()
        except (TimeoutError, OSError) as error:
            # The messages of the exchange and of _start_worker name the address, the file and
            # the fix; a traceback of the launcher's internals would only bury them.
            self.logger.error("%s", error)
            return 1
        finally:
            self._teardown_now()

    def _warn_if_pinned_to_one_cpu(self) -> None:
        """Say so when the MPI launcher bound this rank to a single CPU of a bigger node.

        Open MPI's ``mpirun`` binds each rank to one core by default (seen on a 32-core GPU
        node: every worker got one CPU and one polars thread). The binding can only narrow the
        task's CPU set, never widen it, so the fix belongs on the ``mpirun`` line.
        """
        allowed, on_node = len(os.sched_getaffinity(0)), os.cpu_count() or 1
        ranks_on_node = detect_rank_info(self.environ).local_size
        if allowed == 1 and on_node >= 2 * ranks_on_node:  # one CPU is not this rank's share
            self.logger.warning(
                "rank %d may run on 1 of this node's %d CPUs (the MPI launcher bound it): "
                "its worker gets one polars thread. Give each rank its share of cores, e.g. "
                "'mpirun --bind-to none' or '--map-by ppr:<ranks per node>:node:pe=<cores>' "
                "(Open MPI), 'srun --cpus-per-task=<cores>' (Slurm)",
                self.plan.rank,
                on_node,
            )

    def _patient_connections(self) -> None:
        """Let this rank's connections take as long to open as a worker may take to join.

        distributed gives up on a connection after 30 s; a worker whose registration or
        heartbeat cannot connect in time leaves the cluster, which stops the whole job. On a
        node loaded by other jobs TLS handshakes can be that slow, while a rank that is really
        gone is noticed by its broken exit-status connection, not by a connect timeout.
        """
        import dask.config
        from dask.utils import parse_timedelta

        current = dask.config.get("distributed.comm.timeouts.connect")
        patient = max(parse_timedelta(current, default="s"), self.options.worker_timeout_s)
        dask.config.set({"distributed.comm.timeouts.connect": f"{patient}s"})

    # rank 0 -----------------------------------------------------------------------------

    def _run_rank_zero(self) -> int:
        assert self._loop is not None
        cert, key = new_tls_key_pair() if self.plan.protocol == "tls" else (None, None)
        host = bind_address(self.plan.scheduler_interface)
        self._scheduler = self._loop.run(
            start_scheduler(
                host=host,
                protocol=self.plan.protocol,
                security=security_for(ClusterContact("", "", 0, 0.0, cert, key)),
                dashboard_port=self.options.dashboard_port,
            )
        )
        self._watch = WorkerLossWatch(self._on_worker_loss)
        self._scheduler.add_plugin(self._watch)
        self._board = ExitBoard()
        self._board.install(self._scheduler)
        contact = ClusterContact(
            address=self._scheduler.address,
            job=job_identity(self.environ),
            size=self.plan.size,
            created_s=time.time(),
            tls_cert_pem=cert,
            tls_key_pem=key,
        )
        self._write_job_dir(contact)
        self._publish(contact)
        self._announce_addresses(contact)
        self._start_worker(contact)
        try:
            self._loop.run(
                wait_for_workers(
                    self._scheduler, self.plan.size, self.options.worker_timeout_s, self._joined
                )
            )
        except TimeoutError as error:
            self.logger.error("%s", error)
            self._finish(1, timeout_s=TEARDOWN_TIMEOUT_S / 4)
            return 1
        self.logger.info("all %d workers joined; running %s", self.plan.size, self.plan.script)
        import dask.config

        with dask.config.set(dask_config_for(contact)):
            status = run_script(self.plan.script, self.options.script_args)
        self._finish(status)
        return status

    def _publish(self, contact: ClusterContact) -> None:
        if self.plan.exchange == "mpi":
            _, hosts = mpi_share_contact(contact, self.comm, self.options.worker_timeout_s)
            self._hosts = dict(enumerate(hosts))
        elif self.plan.exchange == "rendezvous":
            self._rendezvous = RendezvousServer(contact, self.plan.rendezvous_ports)
        elif self.plan.exchange == "scheduler-file":
            assert self.options.scheduler_file is not None
            if self._job_dir is not None:  # the file names the key's file, never holds the key
                contact = contact.without_key(self._job_dir / "key.pem")
            write_scheduler_file(self.options.scheduler_file, contact)
            self._scheduler_file_contact = contact

    def _joined(self) -> Mapping[int, str]:
        if self._rendezvous is not None:
            return {0: socket.gethostname(), **self._rendezvous.joined}
        return self._hosts

    def _write_job_dir(self, contact: ClusterContact) -> None:
        """Write the job's TLS files (for outside clients and scheduler-file ranks) first."""
        if contact.tls_key_pem is None:
            return
        root = self.options.job_dir or Path.home() / ".polars-hpc" / "jobs"
        for stale in remove_stale_job_dirs(root):
            self.logger.info("removed TLS files of an ended job: %s", stale)
        self._job_dir = write_job_dir(root, contact)

    def _announce_addresses(self, contact: ClusterContact) -> None:
        assert self._scheduler is not None
        where = self.plan.exchange
        if self.plan.exchange == "scheduler-file":
            where = f"scheduler-file {self.options.scheduler_file}"
        self.logger.info("scheduler at %s (%s)", contact.address, where)
        self.logger.info("dashboard: %s", self._dashboard_link())
        if self._job_dir is not None:
            self.logger.info("TLS files for clients outside the job: %s", self._job_dir)
        else:
            self.logger.warning(
                "--insecure: no TLS; any user who can reach %s can run code as you",
                contact.address,
            )

    def _dashboard_link(self) -> str:
        """The dashboard's URL, or why there is none (never a link to a page that fails)."""
        assert self._scheduler is not None
        if self.options.dashboard_port is None:
            return "off (--no-dashboard)"
        if not dashboard_works():
            return f"not available ({BOKEH_HINT})"
        from distributed.comm.addressing import unparse_host_port

        server = self._scheduler.http_server
        return f"http://{unparse_host_port(server.address, server.port)}/status"

    def _finish(self, status: int, timeout_s: float = 20.0) -> None:
        """Tell every rank the exit status; wait until they have it and their workers left."""
        assert self._loop is not None
        assert self._scheduler is not None
        assert self._board is not None
        if self._watch is not None:
            self._watch.finishing = True
        board, scheduler = self._board, self._scheduler
        self._loop.loop.call_soon_threadsafe(board.publish, status)
        with contextlib.suppress(Exception):
            self._loop.run(board.wait_answered(self.plan.size - 1, timeout_s))
            own_worker = 1 if self._worker is not None else 0
            self._loop.run(wait_for_workers_to_leave(scheduler, own_worker, timeout_s))

    def _on_worker_loss(self, what: str) -> None:
        self.logger.error("%s; stopping the job (exit status 1)", what)
        threading.Thread(target=self._abort, args=(1,), daemon=True).start()

    # ranks 1.. ---------------------------------------------------------------------------

    def _run_worker_rank(self) -> int:
        assert self._loop is not None
        contact = self._fetch_contact()
        if self.plan.protocol == "tls" and contact.tls_key_pem is None:
            raise RuntimeError(
                f"rank 0 runs an insecure (tcp) cluster at {contact.address} but this rank was "
                "started without --insecure: start every rank with the same options"
            )
        self._start_worker(contact)
        status = self._loop.run(
            wait_for_exit_status(
                contact.address, security_for(contact), self.options.worker_timeout_s
            )
        )
        if status is None:
            self.logger.error(
                "lost the scheduler at %s (rank 0 ended or died); exiting with status 1",
                contact.address,
            )
            return 1
        return status

    def _fetch_contact(self) -> ClusterContact:
        timeout_s = self.options.worker_timeout_s
        if self.plan.exchange == "mpi":
            return mpi_share_contact(None, self.comm, timeout_s)[0]
        if self.plan.exchange == "rendezvous":
            assert self.plan.rendezvous_host is not None
            return fetch_from_rendezvous(
                self.plan.rendezvous_host,
                self.plan.rendezvous_ports,
                job=job_identity(self.environ),
                rank=self.plan.rank,
                timeout_s=timeout_s,
            )
        assert self.options.scheduler_file is not None
        job = job_identity(self.environ)

        def is_current(contact: ClusterContact) -> bool:
            if job:
                return contact.job == job
            return contact.created_s >= self.started_s - STALE_FILE_SLACK_S

        return read_scheduler_file(
            self.options.scheduler_file, is_current=is_current, timeout_s=timeout_s
        ).with_key_loaded()

    # every rank --------------------------------------------------------------------------

    def _start_worker(self, contact: ClusterContact) -> None:
        assert self._loop is not None
        spec = self.plan.worker
        start = start_nanny if spec.nanny else start_in_process_worker
        try:
            self._worker = self._loop.run(
                start(
                    contact.address,
                    spec,
                    host=bind_address(spec.interface),
                    protocol=self.plan.protocol,
                    security=security_for(contact),
                    death_timeout_s=self.options.worker_timeout_s,
                )
            )
        except (TimeoutError, OSError) as error:
            raise TimeoutError(
                f"rank {self.plan.rank}: its worker could not join the scheduler at "
                f"{contact.address} (job {contact.job or 'unknown'}, {self._contact_source()}) "
                f"within {self.options.worker_timeout_s:g} s ({error}). Is rank 0 still running, "
                "and is that address reachable from this host? Choose the network with "
                "--interface"
            ) from error

    def _contact_source(self) -> str:
        """Where this rank learnt the scheduler's address, for error messages."""
        if self.plan.exchange == "scheduler-file":
            return f"from the scheduler file {self.options.scheduler_file}"
        return f"from the {self.plan.exchange} exchange"

    async def _stop_worker(self) -> int | None:
        """Take this rank's worker out of the cluster now; return a nanny's worker pid to kill.

        A nanny is told not to restart its worker (which the caller then kills). An in-process
        worker drops its scheduler stream, as a killed worker process would: the scheduler
        sees it leave at once, so rank 0 stops waiting for it, while this process still has
        to pass ``MPI_Finalize`` (a graceful close would cost a second or more per rank).
        """
        from distributed import Nanny

        if isinstance(self._worker, Nanny):
            self._worker.close_gracefully(reason="polars-hpc-job-done")
            return self._worker.pid
        if self._worker is not None and self._worker.batched_stream is not None:
            self._worker.batched_stream.abort()
        return None

    async def _close_scheduler(self) -> None:
        if self._scheduler is not None:
            scheduler, self._scheduler = self._scheduler, None
            await scheduler.close()

    def _teardown_now(self) -> None:
        """End this rank's processes fast: the job is over, nothing on the worker is kept.

        The worker process is killed outright instead of closed (a graceful close costs seconds
        per rank and saves nothing here); its nanny was told first not to restart it.
        """
        if self._rendezvous is not None:
            self._rendezvous.close()
        if self._scheduler_file_contact is not None:
            assert self.options.scheduler_file is not None
            remove_scheduler_file(self.options.scheduler_file, self._scheduler_file_contact)
        remove_job_dir(self._job_dir)
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            kill_process(self._loop.run(self._stop_worker(), TEARDOWN_TIMEOUT_S / 4))
        with contextlib.suppress(Exception):
            self._loop.run(self._close_scheduler(), TEARDOWN_TIMEOUT_S / 4)
        self._worker = None
        self._loop.stop()

    def _abort(self, status: int) -> None:
        """Leave now, from any thread: tell the others, close this rank, ``os._exit``."""
        if not self._aborting.acquire(blocking=False):
            return
        try:
            if self._scheduler is not None:
                self._finish(status, timeout_s=TEARDOWN_TIMEOUT_S / 4)
            self._teardown_now()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)

    def _install_signal_handlers(self) -> None:
        def on_signal(signum: int, frame: Any) -> None:
            self.logger.warning("received %s; stopping this rank", signal.Signals(signum).name)
            threading.Thread(target=self._abort, args=(128 + signum,), daemon=True).start()

        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(signum, on_signal)
