"""An HTTP server on 127.0.0.1 for the local protocol servers: it can stop listening (connections are
refused, as during an outage) and listen again on the same port, so a client's settings stay valid."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a client killed with its kept-alive connection open (a process at a test's or benchmark's
        # end) is not the server's error
        if not isinstance(sys.exc_info()[1], ConnectionResetError):
            super().handle_error(request, client_address)


class Loopback:
    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.handler = handler
        self.port = 0  # chosen by the first open, kept by the next ones
        self._httpd: _Server | None = None

    def open(self) -> None:
        self._httpd = _Server(("127.0.0.1", self.port), self.handler)
        self.port = int(self._httpd.server_address[1])
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def close(self) -> None:
        """Stop listening: connections are refused until the next `open()`."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
