"""Moving frames between ranks over a :class:`engine.comm.base.Communicator`.

Every function is collective: all ranks call it in the same order with the same tag. Received
frames are always returned in source-rank order, which is what keeps results in polars' order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import polars as pl

from engine.comm.base import Communicator
from engine.executor.frames import from_ipc, to_ipc

__all__ = ["SpillPolicy", "allgather_frames", "gather_to_root", "shuffle"]

ROOT = 0


@dataclass
class SpillPolicy:
    """Where a rank spills received shuffle data once it exceeds ``budget_bytes``.

    Spilled frames are written as Arrow IPC files in ``directory``, memory-mapped back and
    unlinked at once: the pages belong to the page cache (the OS can drop them), not to the
    worker's heap, and nothing is left on disk once the frames are freed.
    """

    directory: str | None = None
    budget_bytes: int | None = None
    spilled_bytes: int = field(default=0)

    def receive(self, payloads: Sequence[bytes | memoryview]) -> list[pl.DataFrame]:
        """Frames of ``payloads``, spilled to disk when together they exceed the budget."""
        total = sum(len(p) for p in payloads)
        if self.directory is None or self.budget_bytes is None or total <= self.budget_bytes:
            return [from_ipc(payload) for payload in payloads]
        os.makedirs(self.directory, exist_ok=True)
        frames = []
        for payload in payloads:
            path = os.path.join(self.directory, f"polars-hpc-spill-{uuid.uuid4().hex}.arrow")
            from_ipc(payload).write_ipc(path, compression="uncompressed")
            frames.append(pl.read_ipc(path, memory_map=True))
            os.unlink(path)
            self.spilled_bytes += len(payload)
        return frames


def shuffle(
    comm: Communicator,
    tag: int,
    outgoing: Sequence[pl.DataFrame],
    spill: SpillPolicy | None = None,
) -> list[pl.DataFrame]:
    """Send ``outgoing[r]`` to rank ``r``; return what every rank sent here, by source rank."""
    received = comm.alltoall(tag, [to_ipc(frame) for frame in outgoing])
    return (spill or SpillPolicy()).receive(received)


def gather_to_root(comm: Communicator, tag: int, frame: pl.DataFrame) -> list[pl.DataFrame]:
    """Rank 0 gets every rank's frame (by rank); other ranks get an empty list."""
    if comm.rank != ROOT:
        comm.send(ROOT, tag, to_ipc(frame))
        return []
    return [frame] + [from_ipc(comm.recv(peer, tag)) for peer in range(1, comm.nranks)]


def allgather_frames(comm: Communicator, tag: int, frame: pl.DataFrame) -> list[pl.DataFrame]:
    """Every rank's frame on every rank, by rank."""
    return [from_ipc(payload) for payload in comm.allgather(tag, to_ipc(frame))]
