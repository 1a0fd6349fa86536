"""Plain TCP transport: one socket per pair of ranks, a reader and a writer thread per peer.

The fallback when ``ucxx`` is not installed, or ``StreamingOptions(transport="tcp")``. Rank ``r``
dials every lower rank and accepts every higher one; each connection starts with a hello naming
the communicator and the dialling rank, so a stray connection (another engine, a port scanner)
is refused instead of becoming a peer. Payloads of any size stream straight from the sender's
buffer into one receive buffer (no chunk reassembly, no intermediate copies).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import struct
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from engine.comm.base import CommunicatorError
from engine.comm.buffers import allocate
from engine.comm.mailbox import SendHandle
from engine.comm.protocol import HEADER_SIZE, Header
from engine.comm.transport import Callbacks

__all__ = ["TcpTransport"]

_HELLO: Final = struct.Struct("<16sI")
_RECV_STEP: Final = 64 * 1024 * 1024
_SOCKET_BUFFER: Final = 4 * 1024 * 1024
_SMALL_PAYLOAD: Final = 64 * 1024
_ACCEPT_POLL_S: Final = 0.2


class TcpTransport:
    """TCP endpoints of one rank; see the module docstring."""

    name = "tcp"

    def __init__(self, host: str, comm_id: bytes) -> None:
        self._host, self._comm_id = host, comm_id
        self._listener = socket.create_server((host, 0), backlog=128)
        self._listener.settimeout(_ACCEPT_POLL_S)
        self._sockets: dict[int, socket.socket] = {}
        self._queues: dict[int, queue.SimpleQueue[tuple[SendHandle, bytes, memoryview] | None]] = {}
        self._threads: list[threading.Thread] = []
        self._closing = threading.Event()
        self._accepted = threading.Condition()
        self._callbacks: Callbacks | None = None

    def local_address(self) -> Mapping[str, Any]:
        """Host and port of this rank's listener."""
        return {"host": self._host, "port": self._listener.getsockname()[1]}

    def connect(
        self,
        rank: int,
        peers: Sequence[Mapping[str, Any]],
        callbacks: Callbacks,
        timeout_s: float,
    ) -> None:
        """Dial lower ranks, accept higher ones, then start the per-peer threads."""
        self._callbacks = callbacks
        deadline = time.monotonic() + timeout_s
        nranks = len(peers)
        acceptor = threading.Thread(
            target=self._accept_loop, args=(nranks,), name="polars-hpc-tcp-accept", daemon=True
        )
        acceptor.start()
        self._threads.append(acceptor)
        for peer in range(rank):
            sock = _dial(peers[peer]["host"], peers[peer]["port"], deadline)
            sock.sendall(_HELLO.pack(self._comm_id, rank))
            self._register(peer, sock)
        with self._accepted:
            done = self._accepted.wait_for(
                lambda: len(self._sockets) == nranks - 1, max(deadline - time.monotonic(), 0)
            )
        if not done:
            missing = sorted(set(range(nranks)) - set(self._sockets) - {rank})
            raise CommunicatorError(
                f"rank {rank}: ranks {missing} did not connect within {timeout_s:g} s "
                "(a firewall between workers, or a worker that hangs?)"
            )
        for peer, sock in self._sockets.items():
            self._start(f"polars-hpc-tcp-read-{peer}", self._read_loop, peer, sock)
            self._start(f"polars-hpc-tcp-write-{peer}", self._write_loop, peer, sock)

    def post(self, peer: int, header: Header, payload: memoryview) -> SendHandle:
        """Queue one message for ``peer``'s writer thread."""
        handle = SendHandle(peer, keepalive=[payload])
        self._queues[peer].put((handle, header.pack(), payload))
        return handle

    def close(self) -> None:
        """Stop the threads and close every socket; idempotent."""
        if self._closing.is_set():
            return
        self._closing.set()
        for outbox in self._queues.values():
            outbox.put(None)
        for sock in self._sockets.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        for sock in self._sockets.values():
            sock.close()

    def _register(self, peer: int, sock: socket.socket) -> None:
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, option, _SOCKET_BUFFER)
        with self._accepted:
            self._sockets[peer] = sock
            self._queues[peer] = queue.SimpleQueue()
            self._accepted.notify_all()

    def _start(self, name: str, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept_loop(self, nranks: int) -> None:
        while not self._closing.is_set() and len(self._sockets) < nranks - 1:
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                sock.settimeout(10)
                comm_id, peer = _HELLO.unpack(_recv_exactly(sock, _HELLO.size))
            except (OSError, EOFError, struct.error):
                sock.close()
                continue
            if comm_id != self._comm_id or not 0 <= peer < nranks or peer in self._sockets:
                sock.close()
                continue
            self._register(peer, sock)

    def _write_loop(self, peer: int, sock: socket.socket) -> None:
        assert self._callbacks is not None
        outbox = self._queues[peer]
        while (item := outbox.get()) is not None:
            handle, header, payload = item
            try:
                if payload.nbytes <= _SMALL_PAYLOAD:
                    sock.sendall(header + payload)
                else:
                    sock.sendall(header)
                    sock.sendall(payload)
            except OSError as error:
                self._callbacks.complete(handle, f"connection lost: {error}")
                self._lost(peer, f"connection lost while sending: {error}")
                _fail_rest(outbox, self._callbacks, "connection lost")
                return
            self._callbacks.complete(handle, None)

    def _read_loop(self, peer: int, sock: socket.socket) -> None:
        assert self._callbacks is not None
        callbacks = self._callbacks
        header_buf = bytearray(HEADER_SIZE)
        try:
            while True:
                _recv_into_exactly(sock, memoryview(header_buf), peer, callbacks)
                header = Header.unpack(header_buf)
                payload = allocate(header.length)
                _recv_into_exactly(sock, payload, peer, callbacks)
                callbacks.on_message(peer, header, payload)
        except (OSError, EOFError) as error:
            self._lost(peer, f"closed its connection ({error or 'end of stream'})")

    def _lost(self, peer: int, reason: str) -> None:
        if not self._closing.is_set() and self._callbacks is not None:
            self._callbacks.on_peer_lost(peer, reason)


def _fail_rest(outbox: queue.SimpleQueue, callbacks: Callbacks, reason: str) -> None:
    while True:
        try:
            item = outbox.get_nowait()
        except queue.Empty:
            return
        if item is not None:
            callbacks.complete(item[0], reason)


def _dial(host: str, port: int, deadline: float) -> socket.socket:
    """Connect, retrying refused connections until ``deadline`` (the peer may still be starting)."""
    while True:
        try:
            return socket.create_connection(
                (host, port), timeout=max(deadline - time.monotonic(), 0.1)
            )
        except OSError as error:
            if time.monotonic() >= deadline:
                raise CommunicatorError(
                    f"could not connect to {host}:{port}: {error} (is that worker reachable?)"
                ) from error
            time.sleep(0.05)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        count = sock.recv_into(view[got:])
        if count == 0:
            raise EOFError
        got += count
    return bytes(buf)


def _recv_into_exactly(
    sock: socket.socket, view: memoryview, peer: int, callbacks: Callbacks
) -> None:
    got, total = 0, view.nbytes
    while got < total:
        count = sock.recv_into(view[got : got + _RECV_STEP])
        if count == 0:
            raise EOFError
        got += count
        callbacks.on_activity(peer)
