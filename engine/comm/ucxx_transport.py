"""UCXX transport: one UCX worker per communicator, endpoints from published worker addresses.

Every rank creates an endpoint to every peer from the peer's UCX *worker address* (gathered
through the scheduler), so UCX sees all of the peer's transports, shared memory and CMA
included, not only the TCP device a socket listener would offer. Receives are worker-level tag
receives; the 64-bit UCX tag says what a message is and who sent it::

    bits 63-62  kind: 01 header, 10 data
    bits 61-42  source rank (up to 2**20 ranks)
    bits 41-12  per-sender sequence number of the message (data only)
    bits 11-0   chunk index (data only; payloads go in chunks of ``chunk_bytes``)

A dispatcher thread keeps one header receive posted per peer; when a header arrives it posts
the payload's chunk receives straight into one fresh buffer and delivers the message when they
complete and every earlier message of that peer was delivered (messages from one peer arrive
in the order they were sent, whatever their sizes). UCX's own progress runs in UCXX's progress
thread (blocking mode: no busy polling).

Endpoints use UCX's peer-failure error handling by default, so a peer that dies makes pending
requests fail instead of taking this process down. That mode costs speed on one host: UCX then
leaves out shared memory and CMA (zero-copy ``process_vm_readv``) and moves bytes over TCP on
the loopback device. ``fast_same_host=True`` drops error handling between ranks on the same host
and so lets UCX use CMA, about 5x faster here (benchmarks/README.md), but UCX aborts a process
whose CMA read hits a peer that just died, so one dead rank can take its same-host peers with it.
Peer failure is detected by the communicator's heartbeats in either mode.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from engine.comm.buffers import allocate
from engine.comm.mailbox import SendHandle
from engine.comm.protocol import HEADER_SIZE, Header
from engine.comm.transport import Callbacks

__all__ = ["DEFAULT_CHUNK_BYTES", "UcxxTransport", "ucxx_importable"]

DEFAULT_CHUNK_BYTES: Final = 1 << 30
_KIND_HEADER: Final = 1 << 62
_KIND_DATA: Final = 2 << 62
_RANK_BITS: Final = 20
_SEQ_BITS: Final = 30
_CHUNK_BITS: Final = 12
# The dispatcher polls request completion: every 50 us while messages flow and for a while
# after (collectives come in bursts), every 2 ms when idle, so an idle worker costs ~no CPU.
_IDLE_SLEEP_S: Final = 0.002
_BUSY_SLEEP_S: Final = 0.00005
_HOT_WINDOW_S: Final = 0.1
_TCP_TUNING: Final = {
    "TCP_TX_SEG_SIZE": "512k",
    "TCP_RX_SEG_SIZE": "512k",
    "TCP_SNDBUF": "4m",
    "TCP_RCVBUF": "4m",
}


def tcp_tuning(environ: Mapping[str, str]) -> dict[str, str]:
    """Larger UCX TCP segments and socket buffers, unless the user set them (``UCX_TCP_*``).

    UCX's TCP transport moves 8 KiB segments by default; with peer-failure error handling it
    carries all same-host traffic too, and 512 KiB segments with 4 MiB socket buffers about
    doubled its throughput here. Which transports UCX uses stays UCX's choice.

    >>> tcp_tuning({"UCX_TCP_RX_SEG_SIZE": "64k"})
    {'TCP_TX_SEG_SIZE': '512k', 'TCP_SNDBUF': '4m', 'TCP_RCVBUF': '4m'}
    """
    return {key: value for key, value in _TCP_TUNING.items() if f"UCX_{key}" not in environ}


def ucxx_importable() -> bool:
    """Whether ``import ucxx`` works in this process.

    A UCX library conflict (another UCX already loaded, e.g. by MPI) fails with ``OSError``
    ("undefined symbol"), not ``ImportError``; either way the TCP transport is the answer.
    """
    try:
        _import_ucxx()
    except (ImportError, OSError):
        return False
    return True


def _import_ucxx() -> Any:
    """Import ucxx against the UCX its wheel ships, not whatever UCX the node has installed.

    HPC nodes often carry an older system UCX (with Open MPI/HPC-X) that the dynamic loader finds
    first; ucxx then refuses it ("Support for UCX 1.16.0 has ended", seen on the GPU test
    machines). ``libucx.load_library()`` preloads the wheel's own libraries.

    ucxx sets ``UCX_MEMTYPE_CACHE``, which UCX on a host without CUDA reports as an "unused
    environment variable" warning from every worker at start-up; that warning is turned off
    unless the user set ``UCX_WARN_UNUSED_ENV_VARS`` themselves.
    """
    os.environ.setdefault("UCX_WARN_UNUSED_ENV_VARS", "n")
    try:
        import libucx
    except ImportError:
        pass
    else:
        libucx.load_library()
    import ucxx._lib.libucxx as ucx_api

    return ucx_api


def _header_tag(src: int) -> int:
    return _KIND_HEADER | (src << (_SEQ_BITS + _CHUNK_BITS))


def _data_tag(src: int, seq: int, chunk: int) -> int:
    return _KIND_DATA | (src << (_SEQ_BITS + _CHUNK_BITS)) | (seq << _CHUNK_BITS) | chunk


class UcxxTransport:
    """UCX endpoints of one rank; see the module docstring."""

    name = "ucxx"

    def __init__(
        self, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES, fast_same_host: bool = False
    ) -> None:
        from ucxx._lib.arr import Array

        self._api = _import_ucxx()
        self._array = Array
        self._chunk_bytes = chunk_bytes
        self._fast_same_host = fast_same_host
        self._context = self._api.UCXContext(
            config_dict=tcp_tuning(os.environ),
            feature_flags=(self._api.Feature.TAG, self._api.Feature.WAKEUP),
        )
        self._worker = self._api.UCXWorker(self._context, enable_delayed_submission=True)
        self._worker.start_progress_thread(polling_mode=False, epoll_timeout=100)
        self._endpoints: dict[int, Any] = {}
        self._rank = -1
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._sends: list[tuple[SendHandle, list[Any]]] = []
        self._closing = threading.Event()
        self._callbacks: Callbacks | None = None
        self._dispatcher: threading.Thread | None = None

    def local_address(self) -> Mapping[str, Any]:
        """This rank's UCX worker address and host name."""
        return {"ucx_address": bytes(self._worker.address.tobytes()), "host": socket.gethostname()}

    def connect(
        self,
        rank: int,
        peers: Sequence[Mapping[str, Any]],
        callbacks: Callbacks,
        timeout_s: float,
    ) -> None:
        """Create an endpoint to every peer and start the dispatcher thread."""
        if len(peers) > 1 << _RANK_BITS:
            raise ValueError(f"the UCXX transport supports up to {1 << _RANK_BITS} ranks")
        self._rank, self._callbacks = rank, callbacks
        my_host = socket.gethostname()
        for peer, entry in enumerate(peers):
            if peer == rank:
                continue
            address = self._api.UCXAddress.create_from_buffer(entry["ucx_address"])
            error_handling = not (self._fast_same_host and entry["host"] == my_host)
            endpoint = self._api.UCXEndpoint.create_from_worker_address(
                self._worker, address, error_handling
            )
            if error_handling:
                endpoint.set_close_callback(self._endpoint_closed, cb_args=(peer,))
            self._endpoints[peer] = endpoint
        self._dispatcher = threading.Thread(
            target=self._dispatch_loop, name=f"polars-hpc-ucxx-{rank}", daemon=True
        )
        self._dispatcher.start()

    def post(self, peer: int, header: Header, payload: memoryview) -> SendHandle:
        """Post the header and every chunk of ``payload`` to ``peer``; return at once."""
        handle = SendHandle(peer, keepalive=[payload])
        tag = self._api.UCXXTag
        with self._lock:
            seq = next(self._seq) % (1 << _SEQ_BITS)
            wire = bytearray(header.with_seq(seq).pack())
            endpoint = self._endpoints[peer]
            requests = [endpoint.tag_send(self._array(wire), tag(_header_tag(self._rank)))]
            for index, start in enumerate(range(0, payload.nbytes, self._chunk_bytes)):
                chunk = payload[start : start + self._chunk_bytes]
                requests.append(
                    endpoint.tag_send(self._array(chunk), tag(_data_tag(self._rank, seq, index)))
                )
            handle.keepalive.append(wire)
            self._sends.append((handle, requests))
        return handle

    def close(self) -> None:
        """Stop the dispatcher, cancel what is in flight, close endpoints and the worker."""
        if self._closing.is_set():
            return
        self._closing.set()
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=5)
        with contextlib.suppress(Exception):
            self._worker.cancel_inflight_requests()
        for endpoint in self._endpoints.values():
            # Closing an endpoint UCX already failed (peer gone) segfaults in UCXX 0.52.
            if endpoint.alive:
                with contextlib.suppress(Exception):
                    endpoint.remove_close_callback()
                with contextlib.suppress(Exception):
                    endpoint.close()
        self._endpoints.clear()
        with contextlib.suppress(Exception):
            self._worker.stop_progress_thread()
        # Drop the UCX worker and context now (their file descriptors and shared memory), not
        # whenever the garbage collector gets to the callback reference cycles.
        self._sends.clear()
        self._callbacks = None
        del self._worker, self._context

    def _endpoint_closed(self, peer: int) -> None:
        if not self._closing.is_set() and self._callbacks is not None:
            self._callbacks.on_peer_lost(peer, "closed its UCX endpoint (process gone?)")

    def _post_header_recv(self, peer: int) -> tuple[Any, bytearray]:
        buf = bytearray(HEADER_SIZE)
        request = self._worker.tag_recv(self._array(buf), self._api.UCXXTag(_header_tag(peer)))
        return request, buf

    def _dispatch_loop(self) -> None:
        assert self._callbacks is not None
        callbacks = self._callbacks
        headers = {peer: self._post_header_recv(peer) for peer in self._endpoints}
        arriving: list[tuple[int, Header, memoryview, list[Any]]] = []
        last_busy = time.monotonic()
        while not self._closing.is_set():
            progressed = False
            for peer, (request, buf) in list(headers.items()):
                if not request.completed:
                    continue
                progressed = True
                if not self._ok(request, peer, callbacks):
                    del headers[peer]
                    continue
                header = Header.unpack(buf)
                callbacks.on_activity(peer)
                headers[peer] = self._post_header_recv(peer)
                payload = allocate(header.length)
                arriving.append(
                    (peer, header, payload, self._post_chunk_recvs(peer, header, payload))
                )
            # Deliver each peer's messages in the order they were sent: a small message's
            # chunks can complete before those of a larger one posted earlier.
            still_arriving = []
            waiting_peers: set[int] = set()
            for peer, header, payload, requests in arriving:
                if peer not in waiting_peers and all(r.completed for r in requests):
                    progressed = True
                    if all(self._ok(request, peer, callbacks) for request in requests):
                        callbacks.on_message(peer, header, payload)
                else:
                    waiting_peers.add(peer)
                    still_arriving.append((peer, header, payload, requests))
            arriving = still_arriving
            progressed |= self._reap_sends(callbacks)
            now = time.monotonic()
            if progressed or arriving or self._sends:
                last_busy = now
            elif now - last_busy > _HOT_WINDOW_S:
                time.sleep(_IDLE_SLEEP_S)
                continue
            time.sleep(_BUSY_SLEEP_S)

    def _post_chunk_recvs(self, peer: int, header: Header, payload: memoryview) -> list[Any]:
        tag = self._api.UCXXTag
        return [
            self._worker.tag_recv(
                self._array(payload[start : start + self._chunk_bytes]),
                tag(_data_tag(peer, header.seq, index)),
            )
            for index, start in enumerate(range(0, payload.nbytes, self._chunk_bytes))
        ]

    def _reap_sends(self, callbacks: Callbacks) -> bool:
        with self._lock:
            finished, pending = [], []
            for entry in self._sends:
                (finished if all(r.completed for r in entry[1]) else pending).append(entry)
            if not finished:
                return False
            self._sends = pending
        for handle, requests in finished:
            errors = [_error_of(request) for request in requests]
            callbacks.complete(handle, next((e for e in errors if e), None))
        return True

    def _ok(self, request: Any, peer: int, callbacks: Callbacks) -> bool:
        error = _error_of(request)
        if error is not None:
            callbacks.on_peer_lost(peer, f"UCX receive failed: {error}")
            return False
        return True


def _error_of(request: Any) -> str | None:
    try:
        request.check_error()
    except Exception as error:
        return f"{type(error).__name__}: {error}"
    return None
