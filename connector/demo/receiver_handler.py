"""The loopback receiver's request handler: routes, auth, the injected outage, CDR batches, uploads."""

from __future__ import annotations

import hashlib
import json
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from connector.demo.receiver_state import Fault, cdr_problem
from connector.demo.recording_upload import UploadError, receive_upload

if TYPE_CHECKING:
    from connector.demo.receiver import ReceiverServer

API_PREFIX = "/v1"
ROUTES = {
    ("GET", "/health"): "health",
    ("POST", "/mqs/connectors/asterisk/cdr"): "cdr",
    ("POST", "/mqs/recording"): "recording",
}
DISCARD_LIMIT = 64 * 1024 * 1024
CHUNK_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """The request body exceeds the receiver's limit."""


class BodyReader:
    """Read a request body framed by Content-Length or chunked transfer coding."""

    def __init__(self, handler: BaseHTTPRequestHandler, limit: int) -> None:
        self._rfile = handler.rfile
        self._limit = limit
        self.total = 0
        coding = handler.headers.get("Transfer-Encoding", "").lower()
        self._chunked = "chunked" in coding
        self._remaining = 0 if self._chunked else int(handler.headers.get("Content-Length") or 0)
        self._done = not self._chunked and self._remaining == 0
        if not self._chunked and self._remaining > limit:
            raise BodyTooLarge(f"body of {self._remaining} bytes exceeds {limit}")

    def read(self, size: int = CHUNK_BYTES) -> bytes:
        """Return up to `size` bytes of the body; b'' at its end."""
        if self._done:
            return b""
        if self._chunked and self._remaining == 0:
            self._next_chunk()
            if self._done:
                return b""
        data = self._rfile.read(min(size, self._remaining))
        if not data:
            raise ConnectionError("client closed the connection mid-body")
        self._remaining -= len(data)
        self.total += len(data)
        if self.total > self._limit:
            raise BodyTooLarge(f"body exceeds {self._limit} bytes")
        if self._remaining == 0:
            if self._chunked:
                self._rfile.readline()  # the CRLF after a chunk
            else:
                self._done = True
        return data

    def _next_chunk(self) -> None:
        line = self._rfile.readline(1024)
        size = int(line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while self._rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            self._done = True
        self._remaining = size

    def read_all(self) -> bytes:
        """Read the whole body."""
        parts = []
        while chunk := self.read():
            parts.append(chunk)
        return b"".join(parts)


class ReceiverHandler(BaseHTTPRequestHandler):
    """One connection (HTTP/1.1 keep-alive) of the loopback receiver."""

    server: ReceiverServer
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # header and body go out as separate writes
    server_version = "connector-demo-receiver"

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: the demo and the tests read the state, not the log."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        try:
            self._route(method, self.path.split("?", 1)[0])
        except BodyTooLarge as error:
            self.close_connection = True
            self._reply(413, {"error": str(error)})
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away; nothing to answer

    def _route(self, method: str, path: str) -> None:
        endpoint = ROUTES.get((method, path.removeprefix(API_PREFIX)))
        if endpoint is None or not path.startswith(API_PREFIX):
            self._discard_body()
            self._reply(404, {"error": f"no route {method} {path}"})
            return
        self._api(endpoint)

    def _api(self, endpoint: str) -> None:
        state = self.server.state
        fault = state.take_fault(endpoint)
        if fault is not None:
            self._discard_body()
            self._reply_fault(endpoint, fault)
            return
        status, payload = self._authorized_call(endpoint)
        state.note(endpoint, status, self.headers.items())
        self._reply(status, payload)

    def _authorized_call(self, endpoint: str) -> tuple[int, dict[str, Any]]:
        if endpoint == "health":
            return 200, {"status": "ok"}  # "200 means reachable": no key needed
        if self.headers.get("Authorization") != f"Bearer {self.server.state.api_key}":
            self._discard_body()
            return 401, {"error": "invalid API key"}
        missing = [h for h in ("User-Agent", "X-Asterisk-Hostname") if not self.headers.get(h)]
        if missing:
            self._discard_body()
            return 400, {"error": f"missing header(s): {', '.join(missing)}"}
        if endpoint == "cdr":
            return self._cdr_batch()
        return self._recording()

    def _cdr_batch(self) -> tuple[int, dict[str, Any]]:
        body = BodyReader(self, self.server.max_body_bytes).read_all()
        key = self.headers.get("Idempotency-Key", "")
        if not key:
            return 400, {"error": "missing Idempotency-Key"}
        try:
            document = json.loads(body)
        except ValueError as error:
            return 400, {"error": f"body is not JSON: {error}"}
        cdrs = document.get("cdrs") if isinstance(document, dict) else None
        if not isinstance(cdrs, list) or not cdrs:
            return 400, {"error": 'body must be {"cdrs": [cdr, ...]} with at least one CDR'}
        for index, cdr in enumerate(cdrs):
            problem = cdr_problem(cdr)
            if problem:
                return 400, {"error": f"cdrs[{index}]: {problem}", "index": index}
        outcome = self.server.state.accept_batch(key, hashlib.sha256(body).hexdigest(), cdrs)
        return outcome.status, outcome.payload

    def _recording(self) -> tuple[int, dict[str, Any]]:
        reader = BodyReader(self, self.server.max_body_bytes)
        try:
            upload = receive_upload(reader.read, self.headers, self.server.data_dir)
        except UploadError as error:
            if not error.body_consumed:
                self.close_connection = True  # unread bytes would corrupt the next request
            return error.status, {"error": str(error)}
        fresh = self.server.state.add_recording(upload.fields["recording_id"], upload.record())
        if not fresh:
            upload.discard()
        return 200, {"recording_id": upload.fields["recording_id"], "duplicate": not fresh}

    def _reply_fault(self, endpoint: str, fault: Fault) -> None:
        self.server.state.note(endpoint, fault.status, self.headers.items())
        headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
        self._reply(fault.status, {"error": fault.body}, headers)

    def _discard_body(self) -> None:
        try:
            reader = BodyReader(self, DISCARD_LIMIT)
            while reader.read():
                pass
        except BodyTooLarge:
            self.close_connection = True

    def _reply(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
