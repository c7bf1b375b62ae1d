"""A real HTTP server on loopback that implements the regional API contract, for tests and demos.

In process:

    with Receiver(api_key=KEY, data_dir=tmp_path) as receiver:
        ...  # point API_BASE_URL at receiver.base_url
        receiver.fail(503, count=3, retry_after="2")
        assert receiver.state.summary()["cdrs"] == 10

As a separate process: `python -m connector.sim.receiver --port 0 --data-dir D` prints
`READY http://127.0.0.1:PORT/v1` on stdout, then serves until SIGTERM. The same switches are
reachable over HTTP under /_test (see ReceiverControl):

    GET  /_test/summary      counts only          GET /_test/received   everything received
    POST /_test/fault        {"status": 503, "count": 3, "duration_s": null, "retry_after": "2",
                              "endpoint": "cdr", "after": false}   (status null = drop connection)
    POST /_test/key          {"refused": true}    POST /_test/delay     {"seconds": 0.2}
    POST /_test/poison       {"field": "raw.UserField", "equals": "bad", "message": "..."}
    POST /_test/reset        forget everything
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from connector.sim.receiver_handler import ReceiverHandler
from connector.sim.receiver_state import Fault, Poison, ReceiverState, field_poison

DEFAULT_API_KEY = "sk_" + "sim" + "0" * 29
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
        state: ReceiverState,
        data_dir: Path | None,
        max_body_bytes: int,
    ) -> None:
        super().__init__(address, ReceiverHandler)
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

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: Path | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.state = ReceiverState(api_key=api_key)
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
        self._host = host
        self._server = ReceiverServer((host, port), self.state, data_dir, max_body_bytes)
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

    def serve_forever(self) -> None:
        """Serve in the calling thread until shutdown (used by the command line)."""
        self._server.serve_forever(poll_interval=0.05)

    # Switches (also reachable over HTTP under /_test).

    def fail(
        self,
        status: int | None,
        *,
        count: int | None = None,
        duration_s: float | None = None,
        retry_after: str | None = None,
        endpoint: str | None = None,
        after: bool = False,
        body: str = "injected fault",
    ) -> None:
        """Answer `status` (None: drop the connection) to the next `count` requests or for a while."""
        until = None if duration_s is None else time.monotonic() + duration_s
        fault = Fault(status, count, until, retry_after, endpoint, after, body)
        with self.state.lock:
            self.state.faults.append(fault)

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        with self.state.lock:
            self.state.faults.clear()

    def refuse_key(self, refused: bool = True) -> None:
        """Answer 401 to every API request while `refused`."""
        with self.state.lock:
            self.state.key_refused = refused

    def set_delay(self, seconds: float) -> None:
        """Wait this long before answering each API request."""
        with self.state.lock:
            self.state.delay_s = seconds

    def set_hold(self, seconds: float) -> None:
        """Do the work of each API request, then wait this long before answering."""
        with self.state.lock:
            self.state.hold_s = seconds

    def poison(self, path: str, equals: str, message: str = "poison CDR") -> None:
        """Reject with 422 any batch holding a CDR whose `path` (e.g. raw.UserField) equals `equals`."""
        with self.state.lock:
            self.state.poisons.append((field_poison(path, equals), message))

    def poison_when(self, predicate: Poison, message: str = "poison CDR") -> None:
        """Reject with 422 any batch holding a CDR (the API's object) for which `predicate` holds."""
        with self.state.lock:
            self.state.poisons.append((predicate, message))

    def clear_poison(self) -> None:
        """Accept poison CDRs again."""
        with self.state.lock:
            self.state.poisons.clear()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m connector.sim.receiver", description="Loopback regional API for tests"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port (printed)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where uploads are kept")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES)
    return parser.parse_args(argv)


def _stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the receiver in the foreground until SIGTERM or Ctrl-C."""
    args = _parse_args(argv)
    receiver = Receiver(
        api_key=args.api_key,
        host=args.host,
        port=args.port,
        data_dir=args.data_dir,
        max_body_bytes=args.max_body_bytes,
    )
    signal.signal(signal.SIGTERM, _stop_on_signal)
    print(f"READY {receiver.base_url}", flush=True)
    try:
        receiver.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        receiver.stop()
    print(json.dumps(receiver.state.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
