"""The API client: requests as the contract says, and every answer classified (MockTransport)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector import __version__
from connector.api.client import (
    ApiClient,
    encode_batch,
    idempotency_key,
    parse_retry_after,
)
from connector.api.multipart import FileState
from connector.config import load_settings
from connector.errors import AuthRefused, FileChanged, FileProblem, Rejected, RetryLater
from connector.metrics import API_AUTH_FAILURES, API_REQUEST_DURATION, REGISTRY

KEY = "sk_" + "K" * 32
BASE = "https://api-test.example/v1"
CDRS = [{"event_id": "e1", "src": "1001"}, {"event_id": "e2", "src_name": "José"}]

Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, **kwargs: Any) -> ApiClient:
    """An ApiClient whose requests go to `handler`."""
    return ApiClient(
        base_url=BASE + "/",
        api_key=KEY,
        hostname="pbx-1",
        timeout_s=5,
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


def answer(status: int, **kwargs: Any) -> Handler:
    """A handler that always answers `status`."""
    return lambda request: httpx.Response(status, **kwargs)


async def test_post_cdrs_sends_the_contract_request() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    async with client_for(handler) as client:
        await client.post_cdrs(CDRS)
        await client.post_cdrs(CDRS)
    request = seen[0]
    assert request.method == "POST"
    assert str(request.url) == BASE + "/mqs/connectors/asterisk/cdr"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert request.headers["User-Agent"] == f"sipstack-connector-asterisk/{__version__}"
    assert request.headers["X-Asterisk-Hostname"] == "pbx-1"
    assert request.headers["Content-Type"] == "application/json"
    assert json.loads(request.content) == {"cdrs": CDRS}
    assert request.headers["Idempotency-Key"] == idempotency_key(["e1", "e2"])
    # A retry is byte for byte the same request.
    assert seen[1].content == request.content
    assert seen[1].headers["Idempotency-Key"] == request.headers["Idempotency-Key"]


def test_body_and_key_are_pure_functions_of_the_cdrs() -> None:
    assert encode_batch(CDRS) == encode_batch([dict(cdr) for cdr in CDRS])
    assert encode_batch(CDRS).isascii()
    assert json.loads(encode_batch(CDRS))["cdrs"][1]["src_name"] == "José"
    assert encode_batch([{"event_id": "x", "raw": {"A": "\ud800"}}]).isascii()
    assert idempotency_key(["e1", "e2"]) == hashlib.sha256(b"e1\ne2").hexdigest()
    assert idempotency_key(["e1", "e2"]) != idempotency_key(["e2", "e1"])
    assert idempotency_key(["e1e2"]) != idempotency_key(["e1", "e2"])


@pytest.mark.parametrize("status", [200, 201, 202, 204, 409, 203, 207])
async def test_delivered(status: int) -> None:
    async with client_for(answer(status)) as client:
        await client.post_cdrs(CDRS)


@pytest.mark.parametrize("status", [400, 413, 422])
async def test_rejected_keeps_the_api_answer(status: int) -> None:
    text = json.dumps({"error": "cdrs[1].duration: bad"}) + "x" * 2000
    async with client_for(answer(status, text=text)) as client:
        with pytest.raises(Rejected) as caught:
            await client.post_cdrs(CDRS)
    assert caught.value.status == status
    assert caught.value.detail.startswith(f"HTTP {status} ")
    assert "cdrs[1].duration: bad" in caught.value.detail
    assert len(caught.value.detail) <= 500


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_refused_is_counted(status: int) -> None:
    before = API_AUTH_FAILURES._value.get()
    async with client_for(answer(status, text="bad key")) as client:
        with pytest.raises(AuthRefused) as caught:
            await client.post_cdrs(CDRS)
    assert caught.value.status == status
    assert API_AUTH_FAILURES._value.get() == before + 1
    assert KEY not in caught.value.detail


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 599])
async def test_retry_later_without_retry_after(status: int) -> None:
    async with client_for(answer(status)) as client:
        with pytest.raises(RetryLater) as caught:
            await client.post_cdrs(CDRS)
    assert caught.value.retry_after_s is None
    assert caught.value.detail.startswith(f"HTTP {status}")


@pytest.mark.parametrize("status", [301, 302, 307, 404, 405, 410, 415, 418, 451])
async def test_unexpected_answers_keep_rows_pending(status: int) -> None:
    headers = {"Location": "https://elsewhere.example/"} if 300 <= status < 400 else {}
    async with client_for(answer(status, headers=headers, text="nope")) as client:
        with pytest.raises(RetryLater) as caught:
            await client.post_cdrs(CDRS)
    assert caught.value.retry_after_s is None
    assert f"HTTP {status}" in caught.value.detail


@pytest.mark.parametrize(("status", "value"), [(429, "17"), (503, " 2.5 "), (500, "0")])
async def test_retry_after_in_seconds(status: int, value: str) -> None:
    async with client_for(answer(status, headers={"Retry-After": value})) as client:
        with pytest.raises(RetryLater) as caught:
            await client.post_cdrs(CDRS)
    assert caught.value.retry_after_s == float(value)


async def test_retry_after_as_http_date() -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    headers = {"Retry-After": format_datetime(when, usegmt=True)}
    async with client_for(answer(429, headers=headers)) as client:
        with pytest.raises(RetryLater) as caught:
            await client.post_cdrs(CDRS)
    assert caught.value.retry_after_s is not None
    assert 100 <= caught.value.retry_after_s <= 121


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("soon", None),
        ("nan", None),
        ("inf", None),
        ("-5", 0.0),
        ("120", 120.0),
        ("Wed, 21 Oct 2026 07:28:00 GMT", 60.0),
        ("Wednesday, 21-Oct-26 07:28:00 GMT", 60.0),  # RFC 850, still allowed
        ("Wed Oct 21 07:28:00 2026", 60.0),  # asctime
        ("Wed, 21 Oct 2026 07:26:00 GMT", 0.0),  # in the past
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    now = datetime(2026, 10, 21, 7, 27, tzinfo=UTC)
    assert parse_retry_after(value, now) == expected


@pytest.mark.parametrize(
    "error",
    [
        httpx.ConnectError("refused"),
        httpx.ReadError("reset"),
        httpx.RemoteProtocolError("Server disconnected"),
        httpx.ConnectTimeout("slow"),
        httpx.ReadTimeout("slow"),
        httpx.WriteTimeout("slow"),
        httpx.PoolTimeout("busy"),
    ],
)
async def test_network_problems_retry_later(error: httpx.TransportError) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    async with client_for(handler) as client:
        with pytest.raises(RetryLater) as caught:
            await client.post_cdrs(CDRS)
    assert caught.value.retry_after_s is None
    assert KEY not in caught.value.detail


def _samples(endpoint: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "api_request_duration_seconds_count", {"endpoint": endpoint, "status": status}
    )
    return value or 0.0


async def test_request_durations_are_recorded() -> None:
    assert API_REQUEST_DURATION is not None
    before = (_samples("cdr", "503"), _samples("cdr", "timeout"), _samples("health", "200"))

    def timeout(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow")

    async with client_for(answer(503)) as client:
        with pytest.raises(RetryLater):
            await client.post_cdrs(CDRS)
    async with client_for(timeout) as client:
        with pytest.raises(RetryLater):
            await client.post_cdrs(CDRS)
    async with client_for(answer(200)) as client:
        assert await client.health() == 200
    after = (_samples("cdr", "503"), _samples("cdr", "timeout"), _samples("health", "200"))
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 1]


async def test_health_returns_any_status_and_raises_only_on_network_errors() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(401)

    async with client_for(handler) as client:
        assert await client.health() == 401
    assert str(seen[0].url) == BASE + "/health"
    assert seen[0].method == "GET"

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    async with client_for(down) as client:
        with pytest.raises(RetryLater):
            await client.health()


class StreamingTransport(httpx.AsyncBaseTransport):
    """Consume the request body chunk by chunk, as a network transport does."""

    def __init__(self, status: int = 201, on_chunk: Callable[[int], None] | None = None) -> None:
        self.status = status
        self.on_chunk = on_chunk
        self.requests: list[tuple[httpx.Request, list[bytes]]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        chunks: list[bytes] = []
        assert isinstance(request.stream, httpx.AsyncByteStream)
        async for chunk in request.stream:
            chunks.append(chunk)
            if self.on_chunk is not None:
                self.on_chunk(len(chunks))
        self.requests.append((request, chunks))
        return httpx.Response(self.status)


def streaming_client(transport: StreamingTransport) -> ApiClient:
    """An ApiClient over `transport`."""
    return ApiClient(base_url=BASE, api_key=KEY, hostname="pbx-1", timeout_s=5, transport=transport)


async def test_upload_streams_fields_and_file(tmp_path: Path) -> None:
    audio = tmp_path / 'call "1".wav'
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    audio.write_bytes(payload)
    transport = StreamingTransport()
    fields = {"recording_id": "r-1", "file_name": audio.name, "sha256": "ab", "uniqueid": "1.2"}
    async with streaming_client(transport) as client:
        sent = await client.upload_recording(audio, fields, "audio/wav")
    assert sent == len(payload)
    request, chunks = transport.requests[0]
    body = b"".join(chunks)
    assert str(request.url) == BASE + "/mqs/recording"
    assert max(len(chunk) for chunk in chunks) <= 256 * 1024  # read in pieces, never whole
    assert int(request.headers["Content-Length"]) == len(body)
    assert "Transfer-Encoding" not in request.headers
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    boundary = request.headers["Content-Type"].split("boundary=")[1].encode()
    assert request.headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert body.endswith(b"\r\n--" + boundary + b"--\r\n")
    assert b'name="recording_id"\r\n\r\nr-1\r\n' in body
    part_head = b'name="audio"; filename="call %221%22.wav"\r\nContent-Type: audio/wav\r\n\r\n'
    assert part_head in body
    start = body.index(part_head) + len(part_head)
    assert body[start : start + len(payload)] == payload


@pytest.mark.parametrize(
    ("status", "error"), [(422, Rejected), (401, AuthRefused), (503, RetryLater), (409, None)]
)
async def test_upload_answers_are_classified(
    tmp_path: Path, status: int, error: type[Exception] | None
) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF" * 10)

    async with streaming_client(StreamingTransport(status)) as client:
        if error is None:
            assert await client.upload_recording(audio, {}, "audio/wav") == 40
        else:
            with pytest.raises(error):
                await client.upload_recording(audio, {}, "audio/wav")


async def upload_problem(path: Path, expected: FileState | None = None) -> FileProblem:
    """Upload `path` and return the FileProblem raised; fail if anything was sent."""
    transport = StreamingTransport()
    async with streaming_client(transport) as client:
        with pytest.raises(FileProblem) as caught:
            await client.upload_recording(path, {}, "audio/wav", expected=expected)
    assert transport.requests == []
    return caught.value


async def test_upload_of_a_vanished_file_raises_file_problem(tmp_path: Path) -> None:
    problem = await upload_problem(tmp_path / "gone.wav")
    assert str(problem) == "file vanished before upload"
    assert not isinstance(problem, FileChanged)


async def test_upload_of_a_symlink_raises_file_problem(tmp_path: Path) -> None:
    target = tmp_path / "real.wav"
    target.write_bytes(b"RIFF" * 10)
    link = tmp_path / "a.wav"
    link.symlink_to(target)
    problem = await upload_problem(link)
    assert str(problem) == "the file was replaced by a symbolic link; not following it"


async def test_upload_of_a_changed_file_raises_file_changed(tmp_path: Path) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF" * 10)
    detected = audio.stat()
    problem = await upload_problem(audio, FileState(detected.st_size - 1, detected.st_mtime))
    assert isinstance(problem, FileChanged)
    assert str(problem) == "file changed since it was detected (39 bytes then, 40 now)"


async def test_upload_of_something_not_a_regular_file_raises_file_problem(tmp_path: Path) -> None:
    folder = tmp_path / "a.wav"
    folder.mkdir()
    assert str(await upload_problem(folder)) == "cannot read the file: not a regular file"


async def test_upload_of_a_file_that_shrinks_retries_later(tmp_path: Path) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"x" * 1_000_000)

    def truncate(chunks_seen: int) -> None:
        if chunks_seen == 1:  # the fields went out; the file is cut short before its bytes
            audio.write_bytes(b"short")

    async with streaming_client(StreamingTransport(200, truncate)) as client:
        with pytest.raises(RetryLater, match="early"):
            await client.upload_recording(audio, {}, "audio/wav")


async def test_from_settings(clean_env: Path) -> None:
    settings = load_settings(api_key=KEY, region="ca1", host_hostname="pbx-9", api_timeout=7)
    async with ApiClient.from_settings(settings) as client:
        assert client.base_url == "https://api-ca1.sipstack.com/v1"
        assert KEY not in repr(client) and KEY not in repr(vars(client))
    with pytest.raises(ValueError, match="API_KEY"):
        ApiClient.from_settings(load_settings())
