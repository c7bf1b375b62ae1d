"""A tiny real HTTP server on loopback answering GET /healthz, for the healthcheck and status.sh tests."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        if self.path != "/healthz":
            self._answer(404, {"status": "fail", "detail": "not found"})
            return
        ok = self.server.status == 200
        self._answer(self.server.status, {"status": "ok" if ok else "fail", "detail": self.server.detail})

    def _answer(self, status: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], status: int, detail: str) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)
        self.status = status
        self.detail = detail
        self.paths: list[str] = []


@contextmanager
def health_server(
    host: str = "127.0.0.1", port: int = 0, status: int = 200, detail: str = ""
) -> Iterator[_Server]:
    """Serve /healthz answering `status` on host:port (0: any free port) until the block ends."""
    server = _Server(
        (host, port), status, detail or ("outbox writable" if status == 200 else "outbox not writable")
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
