"""The regional API client (README, "What happens on each API answer"): CDRs, recordings, health.

Every answer is classified into exactly one outcome: the call returns (delivered), or raises
RetryLater, Rejected or AuthRefused (connector.errors); a recording file that cannot be sent as
detected raises FileProblem. Nothing else escapes on purpose. Each error's detail is the one-line
text of the answer (`HTTP 422 Unprocessable Entity: <the API's answer>`), formatted here only:
callers log and store it as it is. The key is only ever put in the Authorization header; nothing
here logs it, and it is not part of any error message.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from connector import __version__
from connector.api.multipart import FileState, TrailingDigest, open_multipart
from connector.errors import AuthRefused, FileChanged, Rejected, RetryLater
from connector.metrics import API_AUTH_FAILURES, API_REQUEST_DURATION

if TYPE_CHECKING:
    from connector.config import Settings

CDR_PATH = "/mqs/connectors/asterisk/cdr"
RECORDING_PATH = "/mqs/recording"
HEALTH_PATH = "/health"
USER_AGENT = f"sipstack-connector-asterisk/{__version__}"
DETAIL_MAX_CHARS = 500

DELIVERED = frozenset({200, 201, 202, 204, 409})
REJECTED = frozenset({400, 413, 422})
AUTH_REFUSED = frozenset({401, 403})
RETRY_LATER = frozenset({408, 429})


def encode_batch(cdrs: Sequence[Mapping[str, Any]]) -> bytes:
    """Serialize a batch body; the same CDRs always give the same bytes."""
    # ASCII-only JSON: always valid UTF-8, even for a lone surrogate in a header value.
    return json.dumps({"cdrs": list(cdrs)}, separators=(",", ":")).encode("ascii")


def idempotency_key(event_ids: Sequence[str]) -> str:
    """Hash a batch's event_ids, in order, into its Idempotency-Key."""
    return hashlib.sha256("\n".join(event_ids).encode("utf-8", "surrogatepass")).hexdigest()


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Read Retry-After as seconds or an HTTP date; None when absent or unreadable."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # an HTTP date is always GMT
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN or infinite
        return None
    return max(0.0, seconds)


API_KEY_IN_TEXT = re.compile(r"sk_[A-Za-z0-9]{32}")


def _detail(response: httpx.Response) -> str:
    text = response.text.strip()
    reason = response.reason_phrase or ""
    detail = f"HTTP {response.status_code} {reason}".rstrip()
    if text:
        # A proxy that echoes the request would echo the key: never keep it in logs or last_error.
        detail = f"{detail}: {API_KEY_IN_TEXT.sub('sk_***', text)}"
    return detail if len(detail) <= DETAIL_MAX_CHARS else detail[: DETAIL_MAX_CHARS - 1] + "…"


def classify(response: httpx.Response) -> None:
    """Return if the answer means delivered; else raise the matching SendError."""
    status = response.status_code
    if status in DELIVERED or 200 <= status < 300:
        return
    if status in REJECTED:
        raise Rejected(_detail(response), status)
    if status in AUTH_REFUSED:
        API_AUTH_FAILURES.inc()
        raise AuthRefused(_detail(response), status)
    retry_after = None
    if status in RETRY_LATER or status >= 500:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
    # Anything else (3xx, 404, 405, ...) says nothing about the rows: most likely API_BASE_URL or a
    # proxy is wrong. Retrying keeps every row pending until the operator fixes it.
    raise RetryLater(_detail(response), retry_after)


class ApiClient:
    """One keep-alive HTTP client for the regional API; use as an async context manager."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        hostname: str,
        timeout_s: float,
        max_connections: int = 20,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.AsyncClient(
            headers={
                "Authorization": f"Bearer {api_key}",
                "User-Agent": USER_AGENT,
                "X-Asterisk-Hostname": hostname,
            },
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=False,
            transport=transport,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, transport: httpx.AsyncBaseTransport | None = None
    ) -> ApiClient:
        """Build the client from API_KEY, API_BASE_URL/REGION, API_TIMEOUT and the hostname."""
        if settings.api_key is None:
            raise ValueError("API_KEY is not set")
        return cls(
            base_url=settings.api_url,
            api_key=settings.api_key.get_secret_value(),
            hostname=settings.hostname,
            timeout_s=settings.api_timeout,
            # CDR requests and recording uploads share the pool; neither may starve the other.
            max_connections=settings.cdr_max_concurrent + settings.recording_upload_concurrency + 2,
            transport=transport,
        )

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the kept-alive connections."""
        await self._http.aclose()

    async def post_cdrs(self, cdrs: Sequence[Mapping[str, Any]]) -> None:
        """Post one batch of mapped CDRs; return when delivered, else raise a SendError."""
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key([str(cdr["event_id"]) for cdr in cdrs]),
        }
        request = self._http.build_request(
            "POST", self.base_url + CDR_PATH, content=encode_batch(cdrs), headers=headers
        )
        classify(await self._send("cdr", request))

    async def upload_recording(
        self,
        path: Path,
        fields: Mapping[str, str],
        content_type: str,
        *,
        expected: FileState | None = None,
        digest: TrailingDigest | None = None,
    ) -> int:
        """Stream one recording as part `audio` with `fields`; return the file's size when delivered.

        A file that is gone, a symlink or unreadable raises FileProblem before anything is sent; so
        does a file that no longer matches `expected` (FileChanged); one that changes while it is
        sent raises RetryLater. With `digest`, the file's sha256 is computed on the way, sent after
        the file part, and left in `digest.hexdigest`.
        """
        body = await open_multipart(path, "audio", fields, content_type, expected=expected, digest=digest)
        try:
            request = self._http.build_request(
                "POST",
                self.base_url + RECORDING_PATH,
                content=body,
                headers={"Content-Type": body.media_type, "Content-Length": str(body.content_length)},
            )
            try:
                response = await self._send("recording", request)
            except FileChanged as error:
                raise RetryLater(f"{path.name}: {error}") from None
        finally:
            body.handle.close()
        classify(response)
        return body.size

    async def health(self) -> int:
        """GET /health and return its status; a network problem raises RetryLater."""
        request = self._http.build_request("GET", self.base_url + HEALTH_PATH)
        return (await self._send("health", request)).status_code

    async def _send(self, endpoint: str, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        try:
            response = await self._http.send(request)
        except httpx.TimeoutException as error:
            _observe(endpoint, "timeout", started)
            raise RetryLater(f"timeout: {type(error).__name__}") from None
        except httpx.TransportError as error:
            _observe(endpoint, "error", started)
            raise RetryLater(f"{type(error).__name__}: {error}") from None
        _observe(endpoint, str(response.status_code), started)
        return response


def _observe(endpoint: str, status: str, started: float) -> None:
    API_REQUEST_DURATION.labels(endpoint=endpoint, status=status).observe(time.perf_counter() - started)
