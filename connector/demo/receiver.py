"""A real HTTP server on loopback that implements the regional API contract, for `connector demo`.

    with Receiver(api_key=KEY, data_dir=tmp_path) as receiver:
        ...  # point API_BASE_URL at receiver.base_url
        receiver.fail(503, duration_s=5, retry_after="1")  # an outage
        assert receiver.state.summary()["cdrs"] == 10

It checks what README's "What each CDR becomes" and "Call recordings" promise the API receives.
The tests' double (tests/doubles/receiver.py) adds their switches and a command line.
"""

from __future__ import annotations

import socket
import threading
import time
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from connector.demo.receiver_handler import ReceiverHandler
from connector.demo.receiver_state import Fault, ReceiverState

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024


class ReceiverServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that can close its kept-alive connections when it stops."""

    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads: no thread outlives stop()
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[ReceiverHandler],
        state: ReceiverState,
        data_dir: Path | None,
        max_body_bytes: int,
    ) -> None:
        super().__init__(address, handler)
        self.state = state
        self.data_dir = data_dir
        self.max_body_bytes = max_body_bytes
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every handler blocked on a kept-alive connection so that it ends."""
        with self._open_lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # already closed by the peer


class Receiver:
    """The loopback API, served from a background thread; start() / stop() or `with`."""

    handler_type: type[ReceiverHandler] = ReceiverHandler
    state_type: type[ReceiverState] = ReceiverState

    def __init__(
        self,
        *,
        api_key: str,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: Path | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.state = self.state_type(api_key=api_key)
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
        self._host = host
        self._server = ReceiverServer((host, port), self.handler_type, self.state, data_dir, max_body_bytes)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The API base URL to configure as API_BASE_URL."""
        return f"http://{self._host}:{self.port}/v1"

    def start(self) -> Receiver:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and join every thread."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.close_connections()
        self._server.server_close()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def fail(
        self,
        status: int,
        *,
        duration_s: float | None = None,
        retry_after: str | None = None,
        body: str = "injected fault",
    ) -> None:
        """Answer `status` to every request for `duration_s` seconds (None: as long as it runs)."""
        until = None if duration_s is None else time.monotonic() + duration_s
        with self.state.lock:
            self.state.faults.append(Fault(status, until, retry_after, body))
