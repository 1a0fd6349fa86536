"""Worker side: this worker's communicator for an engine, found by the engine's comm id."""

from __future__ import annotations

from engine.comm.base import Communicator

__all__ = ["worker_communicator"]


def worker_communicator(comm_id: str) -> Communicator:
    """The communicator the engine's bootstrap left on this worker under ``comm_id``."""
    from engine.comm import communicator_for

    return communicator_for(comm_id)
