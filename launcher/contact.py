"""What every rank needs to join the cluster: the scheduler address and the job's TLS identity.

One small frozen record, serialised as JSON, travels by MPI broadcast, the Slurm rendezvous or a
scheduler file (:mod:`launcher.exchange`). It carries the job id so that a record from an
earlier job (a stale file, another job's rendezvous on a shared node) is recognised and ignored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

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
