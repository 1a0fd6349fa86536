"""Moving frames between ranks over a :class:`engine.comm.base.Communicator`.

Every function is collective: all ranks call it in the same order with the same tag. Received
frames are always returned in source-rank order, which is what keeps results in polars' order.

A shuffle's receive side is bounded: frames travel as IPC messages of at most
:meth:`SpillPolicy.chunk_bytes` each, the communicator lets peers send only what the
receiving rank's :class:`SpillPolicy` has room for (:meth:`Communicator.alltoall_stream`), and
each message that arrives once the budget is used goes to disk at once. A rank so holds at most
its budget plus one message of received data, however much it receives (plus, per peer, one
message under :data:`engine.comm.stream.EAGER_BYTES` that a small sequence sends unasked).
The communicator knows bytes only; cutting frames into messages and spilling them is here.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import polars as pl

from engine.comm.base import Communicator
from engine.executor.frames import concat_frames, from_ipc, iter_ipc_chunks, to_ipc

__all__ = [
    "DEFAULT_MESSAGE_BYTES",
    "ExchangeStats",
    "SpillPolicy",
    "allgather_frames",
    "gather_to_root",
    "shuffle",
]

ROOT = 0
DEFAULT_MESSAGE_BYTES: Final = 64 * 1024 * 1024
"""Largest shuffle message when the budget does not ask for smaller ones."""
_MIN_MESSAGE_BYTES: Final = 64 * 1024
_MESSAGES_PER_BUDGET: Final = 8


@dataclass(frozen=True)
class ExchangeStats:
    """What one shuffle did on one rank (``tag`` names the shuffle: every rank draws the same)."""

    tag: int
    received_bytes: int
    spilled_bytes: int
    peak_in_memory_bytes: int


@dataclass
class SpillPolicy:
    """Where a rank spills received shuffle data once it exceeds ``budget_bytes``.

    The budget applies to each shuffle's received data on its own. Spilled frames are written
    as Arrow IPC files in ``directory``, memory-mapped back and unlinked at once: the pages
    belong to the page cache (the OS can drop them), not to the worker's heap, and nothing is
    left on disk once the frames are freed. Without a directory or a budget nothing spills.

    Attributes
    ----------
    directory, budget_bytes
        Spill directory (the worker's local directory) and per-shuffle memory budget.
    message_bytes
        Largest message a shuffle sends; ``None``: an eighth of the budget, within 64 KiB to
        :data:`DEFAULT_MESSAGE_BYTES`. It is the most a rank holds beyond its budget.
    spilled_bytes, peak_in_memory_bytes, exchanges
        Totals over this policy's shuffles: bytes spilled, the most received bytes held in
        memory at once by one shuffle (kept frames plus the message being handled), and one
        :class:`ExchangeStats` per shuffle.
    """

    directory: str | None = None
    budget_bytes: int | None = None
    message_bytes: int | None = None
    spilled_bytes: int = 0
    peak_in_memory_bytes: int = 0
    exchanges: list[ExchangeStats] = field(default_factory=list)

    @property
    def bounded(self) -> bool:
        """Whether received data spills past the budget."""
        return self.directory is not None and self.budget_bytes is not None

    def chunk_bytes(self) -> int:
        """Largest message a shuffle under this policy sends."""
        if self.message_bytes is not None:
            return self.message_bytes
        if self.budget_bytes is None:
            return DEFAULT_MESSAGE_BYTES
        share = self.budget_bytes // _MESSAGES_PER_BUDGET
        return min(max(share, _MIN_MESSAGE_BYTES), DEFAULT_MESSAGE_BYTES)

    def receiver(self, nranks: int, tag: int) -> ShuffleReceiver:
        """The receive side of one shuffle under this policy."""
        return ShuffleReceiver(self, nranks, tag)


class ShuffleReceiver:
    """Keeps received messages in memory while they fit the budget, spills the rest."""

    def __init__(self, policy: SpillPolicy, nranks: int, tag: int) -> None:
        self._policy, self._tag = policy, tag
        self._parts: list[dict[int, pl.DataFrame]] = [{} for _ in range(nranks)]
        self._held = self._received = self._spilled = self._peak = 0

    def room(self) -> int:
        """Bytes this shuffle may still keep in memory (the communicator asks before granting)."""
        assert self._policy.budget_bytes is not None
        return self._policy.budget_bytes - self._held

    def accept(self, src: int, index: int, payload: bytes | memoryview) -> None:
        """Take message ``index`` from ``src``: keep it in memory, or spill it if over budget."""
        size = len(payload)
        self._received += size
        self._peak = max(self._peak, self._held + size)
        if self._over_budget(size):
            self._parts[src][index] = self._spill(from_ipc(payload))
            self._spilled += size
        else:
            self._parts[src][index] = from_ipc(payload)
            self._held += size

    def accept_own(self, src: int, frame: pl.DataFrame) -> None:
        """Take this rank's own part, which never leaves memory to get here (not serialized).

        It counts against the budget like any received part; over the budget it spills too,
        so once the caller drops its outgoing frames the memory is free.
        """
        size = frame.estimated_size()
        self._received += size
        if self._over_budget(size):
            self._parts[src][0] = self._spill(frame)
            self._spilled += size
        else:
            self._parts[src][0] = frame
            self._held += size
            self._peak = max(self._peak, self._held)

    def _over_budget(self, size: int) -> bool:
        return self._policy.bounded and self._held + size > (self._policy.budget_bytes or 0)

    def finish(self) -> list[pl.DataFrame]:
        """One frame per source rank, its messages in order; records the shuffle's numbers."""
        policy = self._policy
        policy.spilled_bytes += self._spilled
        policy.peak_in_memory_bytes = max(policy.peak_in_memory_bytes, self._peak)
        policy.exchanges.append(ExchangeStats(self._tag, self._received, self._spilled, self._peak))
        return [concat_frames([parts[i] for i in sorted(parts)]) for parts in self._parts]

    def _spill(self, frame: pl.DataFrame) -> pl.DataFrame:
        assert self._policy.directory is not None
        os.makedirs(self._policy.directory, exist_ok=True)
        path = os.path.join(self._policy.directory, f"polars-hpc-spill-{uuid.uuid4().hex}.arrow")
        frame.write_ipc(path, compression="uncompressed")
        try:
            return pl.read_ipc(path, memory_map=True)
        finally:
            os.unlink(path)


def shuffle(
    comm: Communicator,
    tag: int,
    outgoing: Sequence[pl.DataFrame],
    spill: SpillPolicy | None = None,
) -> list[pl.DataFrame]:
    """Send ``outgoing[r]`` to rank ``r``; return what every rank sent here, by source rank.

    This rank's own part stays a frame (it is never serialized); the others travel as IPC
    messages of at most ``spill.chunk_bytes()`` each, serialized shortly before they may go
    (:data:`engine.comm.stream.LOOKAHEAD` per peer), and are kept or spilled one by one.
    """
    policy, rank = spill or SpillPolicy(), comm.rank
    messages = [
        iter(()) if dst == rank else iter_ipc_chunks(frame, policy.chunk_bytes())
        for dst, frame in enumerate(outgoing)
    ]
    receiver = policy.receiver(comm.nranks, tag)
    receiver.accept_own(rank, outgoing[rank])
    room = receiver.room if policy.bounded else None
    for src, index, payload in comm.alltoall_stream(tag, messages, room):
        receiver.accept(src, index, payload)
    return receiver.finish()


def gather_to_root(comm: Communicator, tag: int, frame: pl.DataFrame) -> list[pl.DataFrame]:
    """Rank 0 gets every rank's frame (by rank); other ranks get an empty list."""
    if comm.rank != ROOT:
        comm.send(ROOT, tag, to_ipc(frame))
        return []
    return [frame] + [from_ipc(comm.recv(peer, tag)) for peer in range(1, comm.nranks)]


def allgather_frames(comm: Communicator, tag: int, frame: pl.DataFrame) -> list[pl.DataFrame]:
    """Every rank's frame on every rank, by rank; this rank's own is not read back from IPC."""
    payloads = comm.allgather(tag, to_ipc(frame))
    return [
        frame if source == comm.rank else from_ipc(payload)
        for source, payload in enumerate(payloads)
    ]
