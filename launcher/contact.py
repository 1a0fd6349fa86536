"""What every rank needs to join the cluster: the scheduler address and the job's TLS identity.

One small frozen record, serialised as JSON, travels by MPI broadcast, the Slurm rendezvous or a
scheduler file (:mod:`launcher.exchange`). It carries the job id so that a record from an
earlier job (a stale file, another job's rendezvous on a shared node) is recognised and ignored.

A scheduler file holds no private key: it names the key's file in the job's private directory
instead (:attr:`ClusterContact.tls_key_file`), which rank 0 removes when the job ends and the
next job sweeps if rank 0 was killed. The scheduler file is often on a project filesystem, may
be copied or kept, and would otherwise carry the key past the job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

__all__ = ["ClusterContact", "job_identity"]


@dataclass(frozen=True)
class ClusterContact:
    """Address of the scheduler, the job it belongs to, and the per-job TLS key pair."""

    address: str
    job: str
    size: int
    created_s: float
    tls_cert_pem: str | None = None
    tls_key_pem: str | None = None
    tls_key_file: str | None = None
    """Where the key is, when :attr:`tls_key_pem` is left out (a scheduler file): a 0600 file in
    the job's 0700 directory; see :meth:`with_key_loaded`."""

    def to_json(self) -> str:
        """Serialise for the wire or a file."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ClusterContact:
        """Parse what :meth:`to_json` wrote; a foreign record raises ``ValueError``.

        >>> c = ClusterContact("tls://10.0.0.1:4000", "7.0", 4, 0.0)
        >>> ClusterContact.from_json(c.to_json()) == c
        True
        """
        try:
            return cls(**json.loads(text))
        except (TypeError, json.JSONDecodeError) as error:
            raise ValueError(f"not a polars-hpc scheduler record: {error}") from None

    def without_key(self, key_file: Path) -> ClusterContact:
        """This record with the key replaced by the path of its file (for a scheduler file)."""
        return replace(self, tls_key_pem=None, tls_key_file=str(key_file))

    def with_key_loaded(self) -> ClusterContact:
        """This record with :attr:`tls_key_file` read into :attr:`tls_key_pem`.

        ``OSError`` naming the file and the fix when this host cannot read it: the job
        directory must be on a filesystem every node of the job sees (the home directory
        usually is).
        """
        if self.tls_key_pem is not None or self.tls_key_file is None:
            return self
        try:
            key = Path(self.tls_key_file).read_text()
        except OSError as error:
            raise OSError(
                f"the scheduler file of job {self.job or '?'} names its TLS key at "
                f"{self.tls_key_file}, which this host cannot read ({error.strerror}): give "
                "every rank the same --job-dir on a filesystem all nodes share (default "
                "~/.polars-hpc/jobs), or run without --scheduler-file"
            ) from None
        return replace(self, tls_key_pem=key)


def job_identity(environ: Mapping[str, str]) -> str:
    """Job and step of this process (``"1234.0"``), or ``""`` where the launcher names none.

    Under Slurm the cluster name is part of it: job ids are unique per cluster only.

    >>> job_identity({"SLURM_JOB_ID": "1234", "SLURM_STEP_ID": "2"})
    '1234.2'
    >>> job_identity({"SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0", "SLURM_CLUSTER_NAME": "hpc"})
    'hpc-7.0'
    >>> job_identity({})
    ''
    """
    cluster = environ.get("SLURM_CLUSTER_NAME")
    if cluster and "SLURM_JOB_ID" in environ:
        return f"{cluster}-{_job_and_step(environ)}"
    return _job_and_step(environ)


def _job_and_step(environ: Mapping[str, str]) -> str:
    for job_var, step_var in (
        ("SLURM_JOB_ID", "SLURM_STEP_ID"),
        ("PBS_JOBID", None),
        ("LSB_JOBID", None),
        ("FLUX_JOB_ID", None),
    ):
        if job_var in environ:
            step = environ.get(step_var, "") if step_var else ""
            return f"{environ[job_var]}.{step}" if step else environ[job_var]
    return ""
