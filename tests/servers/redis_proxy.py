"""A TCP proxy on 127.0.0.1 in front of a real redis-server that can lose one reply.

Armed with a marker (``b"EXEC"``, ``b"EVALSHA"``), it forwards the next client command containing
it, lets Redis run it, and drops the connection when Redis answers, before the answer reaches the
client: what a client sees when Redis is killed, or the network fails, at that instant. The client
cannot tell whether its command ran; redis-py resends some commands and not others. The tests
using this check that every write the fleet makes is right either way.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable

CHUNK = 65536


class ReplyLosingProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lost = threading.Event()  # set once a reply has been dropped
        self.errors: list[Exception] = []  # raised by a `meanwhile` write
        self._armed: bytes | None = None
        self._meanwhile: Callable[[], object] | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    def lose_reply_to(self, marker: bytes, *, meanwhile: Callable[[], object] | None = None) -> None:
        """Drop the answer to the next command whose bytes contain `marker` (once); `meanwhile` runs
        after Redis has answered and before the client sees the connection drop (another client's
        write landing in between)."""
        with self._lock:
            self._armed = marker
            self._meanwhile = meanwhile
            self.lost.clear()

    def close(self) -> None:
        self.listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._sockets += [client, upstream]
            dropping = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, dropping), daemon=True).start()
            threading.Thread(target=self._replies, args=(upstream, client, dropping), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, dropping: threading.Event) -> None:
        tail = b""  # the end of the previous chunk, so a marker split across two chunks is still seen
        while data := _recv(client):
            with self._lock:
                if self._armed is not None and self._armed in tail + data:
                    self._armed = None
                    dropping.set()  # one command at a time per connection: its answer comes next
            tail = data[-16:]
            try:
                upstream.sendall(data)
            except OSError:
                break
        _close(upstream)

    def _replies(self, upstream: socket.socket, client: socket.socket, dropping: threading.Event) -> None:
        while data := _recv(upstream):
            if dropping.is_set():  # Redis has run the command and answered: lose the answer
                if self._meanwhile is not None:
                    try:
                        self._meanwhile()
                    except Exception as exc:  # reported to the test, which fails on it
                        self.errors.append(exc)
                _close(client)
                _close(upstream)
                self.lost.set()
                return
            try:
                client.sendall(data)
            except OSError:
                break
        _close(client)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(CHUNK)
    except OSError:
        return b""


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
