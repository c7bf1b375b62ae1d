"""The monitoring HTTP endpoints: /metrics, /healthz and /readyz on MONITORING_HOST:MONITORING_PORT.

A deliberately tiny HTTP/1.0-style server on asyncio streams: three GET routes, one response per
connection, so it needs no web framework and can never hold the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from connector.errors import OutboxError
from connector.metrics import REGISTRY

log = logging.getLogger(__name__)

REQUEST_LIMIT_BYTES = 8192
READ_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Probe:
    """Callables answering "is it healthy?" and "is it ready?", each with a reason."""

    healthy: Callable[[], tuple[bool, str]]
    ready: Callable[[], tuple[bool, str]]
    before_scrape: Callable[[], Awaitable[None]] | None = None


def _response(status: int, reason: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def _check(answer: tuple[bool, str]) -> bytes:
    ok, detail = answer
    body = json.dumps({"status": "ok" if ok else "fail", "detail": detail}).encode()
    if ok:
        return _response(200, "OK", body, "application/json")
    return _response(503, "Service Unavailable", body, "application/json")


async def _route(path: str, probe: Probe) -> bytes:
    if path == "/metrics":
        if probe.before_scrape is not None:
            try:
                await probe.before_scrape()
            except OutboxError as error:
                # Serve the last values rather than nothing. A failed read says nothing about
                # writing: outbox_writable belongs to the ingest writer alone.
                log.warning("cannot refresh outbox statistics for /metrics: %s", error)
        return _response(200, "OK", generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
    if path == "/healthz":
        return _check(probe.healthy())
    if path == "/readyz":
        return _check(probe.ready())
    return _response(404, "Not Found", b"not found: try /metrics, /healthz or /readyz\n", "text/plain")


async def _serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, probe: Probe) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        method, _, rest = head.decode("latin-1").partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            answer = _response(405, "Method Not Allowed", b"", "text/plain")
        else:
            answer = await _route(path, probe)
            if method == "HEAD":
                answer = answer.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
        writer.write(answer)
        await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        pass  # a client that hangs up or sends garbage gets nothing
    except Exception:
        log.exception("monitoring endpoint failed")
    finally:
        writer.close()


async def start_monitoring(host: str, port: int, probe: Probe) -> asyncio.Server:
    """Start serving; the caller closes the returned server on shutdown."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_one(reader, writer, probe)

    return await asyncio.start_server(handle, host, port, limit=REQUEST_LIMIT_BYTES)
