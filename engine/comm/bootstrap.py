"""Open one communicator per worker through the scheduler, once per engine; close them all.

Client side, :func:`open_communicators` does the whole bootstrap in three ``client.run`` rounds:

1. every worker creates its transport's endpoint (a TCP listener, or a UCX worker) and returns
   its address and placement;
2. the client numbers the workers with :func:`engine.cluster_info.rank_order_key` (host, local
   index, address) and sends the whole table back; every worker connects to every peer;
3. every worker runs a barrier over its new endpoints.

Any failure closes what the earlier rounds opened, on every worker, before the error reaches
the caller. Worker side, a task gets its rank's communicator with :func:`communicator_for`.
Communicators are stored on the Dask ``Worker`` object, keyed by a fresh ``comm_id``, so two
engines on one cluster never share endpoints or messages.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from engine.cluster_info import rank_order_key
from engine.comm.base import CommunicatorError
from engine.comm.peer import PeerCommunicator
from engine.comm.protocol import MAX_SCOPE_ID

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["CommGroup", "communicator_for", "open_communicators", "resolve_transport"]

logger = logging.getLogger(__name__)

CLOSE_TIMEOUT_S: Final = 30.0
"""How long closing a communicator waits for the workers before it gives up and logs."""

WORKER_ATTRIBUTE: Final = "polars_hpc_communicators"
"""Attribute of the Dask ``Worker`` holding ``{comm_id: PeerCommunicator}``."""

_BOOTSTRAP_TAG: Final = 0


@dataclass
class CommGroup:
    """The client's handle on one engine's communicators (one per worker).

    Attributes
    ----------
    comm_id
        Unique id of this group; tasks pass it to :func:`communicator_for`.
    nranks
        Number of ranks (workers).
    worker_addresses
        Dask addresses of the workers, in rank order.
    transport
        ``"ucxx"`` or ``"tcp"`` (``"auto"`` already resolved).
    timeout_s
        Seconds of silence after which a peer counts as failed.
    """

    comm_id: str
    nranks: int
    worker_addresses: list[str]
    transport: Literal["ucxx", "tcp"]
    timeout_s: float
    _client: Client = field(repr=False)
    _scope_ids: itertools.count = field(default_factory=lambda: itertools.count(1), repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _closed: bool = field(default=False, repr=False)

    def new_scope_id(self) -> int:
        """A scope id no earlier query of this engine used (pass it to every rank's task)."""
        with self._lock:
            return (next(self._scope_ids) - 1) % MAX_SCOPE_ID + 1

    def rank_of(self, worker_address: str) -> int:
        """Rank of the worker at ``worker_address``."""
        try:
            return self.worker_addresses.index(worker_address)
        except ValueError:
            raise KeyError(
                f"worker {worker_address} is not part of communicator {self.comm_id} "
                f"(its ranks: {self.worker_addresses})"
            ) from None

    def close(self) -> None:
        """Close endpoints and listeners on every worker that is still there; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        _close_everywhere(self._client, self.comm_id, self.worker_addresses)


def resolve_transport(
    requested: Literal["auto", "ucxx", "tcp"], importable: Mapping[str, bool]
) -> Literal["ucxx", "tcp"]:
    """Pick the transport from the option and which workers can ``import ucxx``.

    >>> resolve_transport("auto", {"tcp://a:1": True, "tcp://b:1": False})
    'tcp'
    >>> resolve_transport("auto", {"tcp://a:1": True})
    'ucxx'
    """
    if requested == "tcp":
        return "tcp"
    missing = sorted(address for address, ok in importable.items() if not ok)
    if requested == "auto":
        return "tcp" if missing else "ucxx"
    if requested == "ucxx" and missing:
        raise CommunicatorError(
            f"transport='ucxx' needs the ucxx package on every worker; it does not import on "
            f"{', '.join(missing)}: pip install ucxx-cu12 there, or pass "
            "StreamingOptions(transport='tcp')"
        )
    if requested != "ucxx":
        raise ValueError(f"transport={requested!r} is not one of 'auto', 'ucxx', 'tcp'")
    return "ucxx"


def open_communicators(
    client: Client,
    *,
    transport: Literal["auto", "ucxx", "tcp"] = "auto",
    timeout_s: float = 60.0,
    ucxx_fast_same_host: bool = False,
) -> CommGroup:
    """Bootstrap one communicator per worker of ``client``'s cluster (see the module docstring).

    Parameters
    ----------
    client
        Client of the cluster; every worker connected now becomes a rank.
    transport
        ``"ucxx"``, ``"tcp"``, or ``"auto"`` (UCXX when every worker can import it).
    timeout_s
        Bound on each bootstrap step, and the communicators' peer-failure timeout.
    ucxx_fast_same_host
        UCXX only: no UCX error handling between ranks on one host, so UCX may use CMA
        (zero-copy, ~5x faster here) at the price that a rank dying mid-transfer can abort its
        same-host peers. See :mod:`engine.comm.ucxx_transport`.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s={timeout_s!r} must be a positive number of seconds")
    importable = client.run(_ucxx_importable) if transport != "tcp" else {}
    chosen = resolve_transport(transport, importable)
    comm_id = uuid.uuid4().hex
    try:
        records = client.run(_open_on_worker, comm_id, chosen, ucxx_fast_same_host)
        if not records:
            raise CommunicatorError(
                "the cluster has no workers yet: wait for them (client.wait_for_workers(n)) "
                "before creating the engine"
            )
        ordered = sorted(records.values(), key=rank_order_key)
        table = [record["endpoint"] for record in ordered]
        ranks = {record["address"]: rank for rank, record in enumerate(ordered)}
        client.run(_connect_on_worker, comm_id, ranks, table, timeout_s)
    except BaseException:
        _close_everywhere(client, comm_id, None)
        raise
    return CommGroup(
        comm_id=comm_id,
        nranks=len(ordered),
        worker_addresses=[record["address"] for record in ordered],
        transport=chosen,
        timeout_s=timeout_s,
        _client=client,
    )


def communicator_for(comm_id: str) -> PeerCommunicator:
    """This worker's communicator of group ``comm_id`` (call it inside a task).

    Raises
    ------
    CommunicatorError
        No such communicator here: the engine was shut down, or this worker joined (or was
        restarted) after the engine started.
    """
    from distributed import get_worker

    worker = get_worker()
    comm = getattr(worker, WORKER_ATTRIBUTE, {}).get(comm_id)
    if not isinstance(comm, PeerCommunicator):
        raise CommunicatorError(
            f"worker {worker.address} has no communicator {comm_id}: the engine that opened it "
            "was shut down, or this worker joined or restarted after the engine started "
            "(create a new DaskEngine)"
        )
    return comm


def _registry(dask_worker: Any) -> dict[str, Any]:
    registry = getattr(dask_worker, WORKER_ATTRIBUTE, None)
    if registry is None:
        registry = {}
        setattr(dask_worker, WORKER_ATTRIBUTE, registry)
    return registry


def _ucxx_importable() -> bool:
    from engine.comm.ucxx_transport import ucxx_importable

    return ucxx_importable()


def _make_transport(name: str, host: str, comm_id: str, fast_same_host: bool) -> Any:
    if name == "ucxx":
        from engine.comm.ucxx_transport import UcxxTransport

        return UcxxTransport(fast_same_host=fast_same_host)
    from engine.comm.tcp import TcpTransport

    return TcpTransport(host, uuid.UUID(comm_id).bytes)


async def _open_on_worker(
    comm_id: str, transport: str, fast_same_host: bool, *, dask_worker: Any
) -> dict[str, Any]:
    """Round 1: create this worker's endpoint; report its address and placement."""
    from distributed.comm import get_address_host

    from engine.cluster_info import describe_this_worker

    host = get_address_host(dask_worker.address)
    opened = await asyncio.to_thread(_make_transport, transport, host, comm_id, fast_same_host)
    _registry(dask_worker)[comm_id] = opened
    placement = describe_this_worker(dask_worker)
    return {
        "hostname": placement["hostname"],
        "local_index": placement["local_index"],
        "address": dask_worker.address,
        "pid": os.getpid(),
        "endpoint": dict(opened.local_address()),
    }


async def _connect_on_worker(
    comm_id: str,
    ranks: dict[str, int],
    table: list[dict[str, Any]],
    timeout_s: float,
    *,
    dask_worker: Any,
) -> int:
    """Rounds 2 and 3: connect to every peer, then a barrier over the new endpoints."""
    registry = _registry(dask_worker)
    rank = ranks[dask_worker.address]
    comm = PeerCommunicator(rank, len(table), registry[comm_id], timeout_s)
    registry[comm_id] = comm
    await asyncio.wait_for(
        asyncio.to_thread(_connect_and_check, comm, table, timeout_s), timeout_s * 2
    )
    return rank


def _connect_and_check(
    comm: PeerCommunicator, table: list[dict[str, Any]], timeout_s: float
) -> None:
    comm.connect(table, timeout_s)
    comm.barrier(_BOOTSTRAP_TAG)


def _close_on_worker(comm_id: str, *, dask_worker: Any) -> bool:
    """Close and forget this worker's communicator (or half-open transport) ``comm_id``."""
    opened = _registry(dask_worker).pop(comm_id, None)
    if opened is None:
        return False
    opened.close()
    return True


def _close_everywhere(client: Client, comm_id: str, workers: list[str] | None) -> None:
    """Close ``comm_id`` on ``workers`` (``None``: every worker) that are still there."""
    if client.status not in ("running", "connecting"):
        return
    alive = set(client.scheduler_info(n_workers=-1)["workers"])
    if workers is not None:
        alive &= set(workers)
    if not alive:
        return

    async def close_with_deadline() -> None:
        # Client.run has no timeout of its own; a wedged worker must not hang the client's close.
        await asyncio.wait_for(
            client._run(_close_on_worker, comm_id, workers=sorted(alive), on_error="return"),
            timeout=CLOSE_TIMEOUT_S,
        )

    try:
        client.sync(close_with_deadline)
    except TimeoutError:
        logger.warning(
            "closing communicator %s did not finish within %.0f s on %s; the workers' own "
            "shutdown closes what is left",
            comm_id,
            CLOSE_TIMEOUT_S,
            ", ".join(sorted(alive)),
        )
