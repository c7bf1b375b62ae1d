"""The loopback receiver over real TCP: contract checks, idempotency, faults, uploads."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connector.api.client import ApiClient, idempotency_key
from connector.errors import AuthRefused, Rejected, RetryLater
from tests.doubles.receiver import DEFAULT_API_KEY, Receiver
from tests.doubles.receiver_control import ReceiverProcess

KEY = DEFAULT_API_KEY
assert len(KEY) == 35


def cdr(n: int, **more: Any) -> dict[str, Any]:
    """A contract-valid CDR object."""
    return {
        "event_id": f"ev-{n}",
        "uniqueid": f"1795735698.{n}",
        "src": "1001",
        "dst": "200",
        "started_at": "2026-11-26T23:28:18Z",
        "duration": 3,
        "direction": "internal",
        "raw": {"Event": "Cdr", "UserField": more.pop("userfield", "")},
        **more,
    }


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    with Receiver(api_key=KEY, data_dir=tmp_path / "received") as running:
        yield running


@pytest.fixture
async def client(receiver: Receiver) -> AsyncIterator[ApiClient]:
    async with ApiClient(base_url=receiver.base_url, api_key=KEY, hostname="pbx-test", timeout_s=10) as api:
        yield api


def raw_post(receiver: Receiver, body: bytes, **headers: str) -> httpx.Response:
    """POST a CDR body with the contract headers, overridable."""
    base = {
        "Authorization": f"Bearer {KEY}",
        "User-Agent": "test",
        "X-Asterisk-Hostname": "pbx",
        "Idempotency-Key": "k-" + hashlib.sha256(body).hexdigest(),
        "Content-Type": "application/json",
    }
    base.update({name.replace("_", "-"): value for name, value in headers.items()})
    base = {name: value for name, value in base.items() if value}
    url = receiver.base_url + "/mqs/connectors/asterisk/cdr"
    return httpx.post(url, content=body, headers=base)


async def test_health_and_batches_are_recorded_once_per_event_id(
    receiver: Receiver, client: ApiClient
) -> None:
    assert await client.health() == 200
    await client.post_cdrs([cdr(1), cdr(2)])
    await client.post_cdrs([cdr(2), cdr(3)])  # a new batch repeating ev-2
    summary = receiver.state.summary()
    assert (summary["cdrs"], summary["deliveries"], summary["duplicates"]) == (3, 4, 1)
    assert list(receiver.state.cdrs) == ["ev-1", "ev-2", "ev-3"]
    assert receiver.state.counts["ev-2"] == 2
    assert summary["last_headers"]["X-Asterisk-Hostname"] == "pbx-test"
    assert summary["last_headers"]["Authorization"] == "***"
    assert summary["answers"] == {"health 200": 1, "cdr 200": 2}


async def test_idempotency_key_replay_and_reuse(receiver: Receiver, client: ApiClient) -> None:
    await client.post_cdrs([cdr(1), cdr(2)])
    await client.post_cdrs([cdr(1), cdr(2)])  # a retry: same key, same body
    assert receiver.state.replays == 1
    with pytest.raises(Rejected, match="Idempotency-Key reused"):
        await client.post_cdrs([cdr(1, dst="999"), cdr(2)])  # same key, different body
    assert receiver.state.cdrs["ev-1"]["dst"] == "200"


async def test_rejected_requests_do_not_bind_their_key(receiver: Receiver, client: ApiClient) -> None:
    receiver.poison("dst", "666", "dst 666 is not allowed")
    with pytest.raises(Rejected, match="dst 666 is not allowed"):
        await client.post_cdrs([cdr(1, dst="666")])
    await client.post_cdrs([cdr(1, dst="667")])  # the key was not used up by the 422
    assert receiver.state.cdrs["ev-1"]["dst"] == "667"


async def test_poison_rejects_the_whole_batch_until_cleared(receiver: Receiver, client: ApiClient) -> None:
    receiver.poison("raw.UserField", "poison", "row is poison")
    batch = [cdr(n, userfield="poison" if n == 3 else "") for n in range(5)]
    with pytest.raises(Rejected) as caught:
        await client.post_cdrs(batch)
    assert caught.value.status == 422
    assert "row is poison" in caught.value.detail and '"index": 3' in caught.value.detail
    assert receiver.state.summary()["cdrs"] == 0
    await client.post_cdrs(batch[:3])
    receiver.poison_when(lambda item: item.get("duration") == 99, "too long")
    with pytest.raises(Rejected, match="too long"):
        await client.post_cdrs([cdr(9, duration=99)])
    receiver.clear_poison()
    await client.post_cdrs(batch[3:])
    await client.post_cdrs([cdr(9, duration=99)])
    assert receiver.state.summary()["cdrs"] == 6


async def test_refused_key_switch(receiver: Receiver, client: ApiClient) -> None:
    receiver.refuse_key()
    with pytest.raises(AuthRefused):
        await client.post_cdrs([cdr(1)])
    receiver.refuse_key(False)
    await client.post_cdrs([cdr(1)])
    async with ApiClient(
        base_url=receiver.base_url, api_key="sk_" + "w" * 32, hostname="h", timeout_s=5
    ) as wrong:
        with pytest.raises(AuthRefused) as caught:
            await wrong.post_cdrs([cdr(2)])
    assert caught.value.status == 401
    assert receiver.state.summary()["cdrs"] == 1


async def test_fault_for_n_requests_with_retry_after(receiver: Receiver, client: ApiClient) -> None:
    receiver.fail(503, count=2, retry_after="7", endpoint="cdr")
    for _ in range(2):
        with pytest.raises(RetryLater) as caught:
            await client.post_cdrs([cdr(1)])
        assert caught.value.retry_after_s == 7.0
    assert await client.health() == 200  # faults on cdr only
    await client.post_cdrs([cdr(1)])
    assert receiver.state.answers["cdr 503"] == 2
    assert receiver.state.summary()["cdrs"] == 1


async def test_fault_for_a_time_window(receiver: Receiver, client: ApiClient) -> None:
    receiver.fail(429, duration_s=0.0, retry_after="1")  # a window that has already closed
    await client.post_cdrs([cdr(1)])
    receiver.fail(429, duration_s=3600, retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    for _ in range(3):
        with pytest.raises(RetryLater) as caught:
            await client.post_cdrs([cdr(2)])
        assert caught.value.retry_after_s == 0.0  # a date in the past: retry now
    receiver.clear_faults()
    await client.post_cdrs([cdr(2)])


async def test_dropped_connection_before_and_after_processing(receiver: Receiver, client: ApiClient) -> None:
    receiver.fail(None, count=1)
    with pytest.raises(RetryLater):
        await client.post_cdrs([cdr(1)])
    assert receiver.state.summary()["cdrs"] == 0
    receiver.fail(None, count=1, after=True)  # stored, but the answer is lost
    with pytest.raises(RetryLater):
        await client.post_cdrs([cdr(1)])
    await client.post_cdrs([cdr(1)])  # the resend, same event_id
    assert receiver.state.counts["ev-1"] == 2
    assert receiver.state.summary()["duplicates"] == 1
    receiver.fail(500, count=1, after=True)
    with pytest.raises(RetryLater):
        await client.post_cdrs([cdr(2)])
    assert "ev-2" in receiver.state.cdrs


async def test_delay_still_answers(receiver: Receiver, client: ApiClient) -> None:
    receiver.set_delay(0.05)
    await client.post_cdrs([cdr(1)])
    receiver.set_delay(0)
    assert receiver.state.summary()["cdrs"] == 1


def test_timeout_when_the_delay_exceeds_it(receiver: Receiver) -> None:
    receiver.set_delay(0.4)
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(receiver.base_url + "/health", timeout=0.1)
    receiver.set_delay(0)


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[]", "cdrs"),
        (b'{"cdrs": []}', "at least one"),
        (b'{"cdrs": [1]}', "not an object"),
        (b'{"cdrs": [{"src": "1"}]}', "event_id"),
        (b'{"cdrs": [{"event_id": "e", "duration": null}]}', "null"),
        (b'{"cdrs": [{"event_id": "e", "duration": "3"}]}', "integer"),
        (b'{"cdrs": [{"event_id": "e", "billsec": true}]}', "integer"),
        (b'{"cdrs": [{"event_id": "e", "started_at": "2026-11-26 23:28:18"}]}', "ISO-8601"),
        (b'{"cdrs": [{"event_id": "e", "direction": "sideways"}]}', "direction"),
        (b'{"cdrs": [{"event_id": "e", "raw": {"A": 1}}]}', "raw"),
        (b'{"cdrs": [{"event_id": "e", "surprise": "x"}]}', "not a field"),
        (b'{"cdrs": [{"event_id": "e", "src": 1001}]}', "string"),
    ],
)
def test_contract_violations_are_400(receiver: Receiver, body: bytes, problem: str) -> None:
    response = raw_post(receiver, body)
    assert response.status_code == 400
    assert problem in response.json()["error"]


@pytest.mark.parametrize("missing", ["Idempotency_Key", "X_Asterisk_Hostname", "Authorization"])
def test_missing_headers(receiver: Receiver, missing: str) -> None:
    response = raw_post(receiver, json.dumps({"cdrs": [cdr(1)]}).encode(), **{missing: ""})
    assert response.status_code == (401 if missing == "Authorization" else 400)


def test_unknown_route_is_404(receiver: Receiver) -> None:
    assert httpx.get(receiver.base_url + "/nope").status_code == 404
    assert httpx.post(receiver.base_url + "/health").status_code == 404


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    with Receiver(api_key=KEY, max_body_bytes=1000) as small:
        response = raw_post(small, json.dumps({"cdrs": [cdr(1, lastdata="x" * 2000)]}).encode())
        assert response.status_code == 413
        assert raw_post(small, json.dumps({"cdrs": [cdr(1)]}).encode()).status_code == 200


def test_chunked_request_body(receiver: Receiver) -> None:
    body = json.dumps({"cdrs": [cdr(1), cdr(2)]}).encode()
    pieces = iter([body[:10], body[10:500], body[500:]])
    headers = {
        "Authorization": f"Bearer {KEY}",
        "User-Agent": "t",
        "X-Asterisk-Hostname": "h",
        "Idempotency-Key": idempotency_key(["ev-1", "ev-2"]),
    }
    url = receiver.base_url + "/mqs/connectors/asterisk/cdr"
    response = httpx.post(url, content=pieces, headers=headers)
    assert response.status_code == 200
    assert receiver.state.summary()["cdrs"] == 2


def test_keep_alive_survives_refused_and_faulted_requests(receiver: Receiver) -> None:
    port = receiver.port
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"cdrs": [cdr(1)]}).encode()
    good = {"Authorization": f"Bearer {KEY}", "User-Agent": "t", "X-Asterisk-Hostname": "h"}
    good["Idempotency-Key"] = "k1"
    path = "/v1/mqs/connectors/asterisk/cdr"
    receiver.fail(503, count=1)
    statuses = []
    bad = {**good, "Authorization": "Bearer nope"}
    for headers in (bad, bad, good):
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
    connection.close()
    assert statuses == [503, 401, 200]  # the fault came first, then auth, then success


def upload_fields(path: Path, **more: str) -> dict[str, str]:
    """The contract's text fields for a file."""
    data = path.read_bytes()
    return {
        "recording_id": more.pop("recording_id", "rec-1"),
        "file_name": path.name,
        "file_size": str(len(data)),
        "sha256": hashlib.sha256(data).hexdigest(),
        "recorded_at": "2026-11-26T23:28:21Z",
        "uniqueid": "1795735698.1",
        **more,
    }


async def test_upload_is_verified_and_stored(receiver: Receiver, client: ApiClient, tmp_path: Path) -> None:
    audio = tmp_path / "lab-1795735443.50.wav"
    audio.write_bytes(os.urandom(300_000))
    assert await client.upload_recording(audio, upload_fields(audio), "audio/wav") == 300_000
    record = receiver.state.recordings["rec-1"]
    assert record["received_sha256"] == hashlib.sha256(audio.read_bytes()).hexdigest()
    assert record["content_type"] == "audio/wav"
    assert record["uniqueid"] == "1795735698.1"
    stored = Path(record["path"])
    assert stored.read_bytes() == audio.read_bytes()  # noqa: ASYNC240 (a test, small file)
    # The same recording again: accepted, counted as a duplicate, not stored twice.
    await client.upload_recording(audio, upload_fields(audio), "audio/wav")
    assert receiver.state.summary()["recording_duplicates"] == 1
    assert len(list((tmp_path / "received" / "recordings").iterdir())) == 1


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"sha256": "0" * 64}, "sha256"),
        ({"file_size": "12"}, "file_size"),
        ({"recorded_at": "2026-11-26 23:28:21"}, "recorded_at"),
        ({"recording_id": ""}, "recording_id"),
    ],
)
async def test_inconsistent_uploads_are_422(
    receiver: Receiver, client: ApiClient, tmp_path: Path, change: dict[str, str], problem: str
) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"RIFF" + os.urandom(5000))
    fields = upload_fields(audio) | change
    with pytest.raises(Rejected, match=problem) as caught:
        await client.upload_recording(audio, fields, "audio/wav")
    assert caught.value.status == 422
    assert not list((tmp_path / "received").glob("recordings/*"))
    await client.upload_recording(audio, upload_fields(audio), "audio/wav")  # connection reused


async def test_upload_with_a_non_audio_type_is_422(
    receiver: Receiver, client: ApiClient, tmp_path: Path
) -> None:
    audio = tmp_path / "a.txt"
    audio.write_bytes(b"hello")
    with pytest.raises(Rejected, match="audio"):
        await client.upload_recording(audio, upload_fields(audio), "text/plain")


def test_upload_encoded_by_httpx_files(receiver: Receiver, tmp_path: Path) -> None:
    audio = tmp_path / "b.mp3"
    audio.write_bytes(os.urandom(70_000))
    headers = {"Authorization": f"Bearer {KEY}", "User-Agent": "t", "X-Asterisk-Hostname": "h"}
    with audio.open("rb") as handle:
        response = httpx.post(
            receiver.base_url + "/mqs/recording",
            data=upload_fields(audio, recording_id="rec-httpx"),
            files={"audio": (audio.name, handle, "audio/mpeg")},
            headers=headers,
        )
    assert response.status_code == 200, response.text
    assert receiver.state.recordings["rec-httpx"]["received_size"] == 70_000


def test_malformed_multipart_is_400(receiver: Receiver) -> None:
    headers = {
        "Authorization": f"Bearer {KEY}",
        "User-Agent": "t",
        "X-Asterisk-Hostname": "h",
        "Content-Type": "multipart/form-data; boundary=xyz",
    }
    url = receiver.base_url + "/mqs/recording"
    assert httpx.post(url, content=b"--xyz\r\nbroken", headers=headers).status_code == 400
    headers["Content-Type"] = "application/json"
    assert httpx.post(url, content=b"{}", headers=headers).status_code == 400


async def test_upload_streams_without_holding_the_file_in_memory(
    receiver: Receiver, client: ApiClient, tmp_path: Path
) -> None:
    audio = tmp_path / "big.wav"
    size = 24 * 1024 * 1024
    with audio.open("wb") as handle:
        for _ in range(size // (1024 * 1024)):
            handle.write(os.urandom(1024 * 1024))
    fields = upload_fields(audio)
    tracemalloc.start()
    try:
        await client.upload_recording(audio, fields, "audio/wav")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Client and receiver both run in this process: together they held a few chunks at most.
    assert peak < 4 * 1024 * 1024
    assert receiver.state.recordings["rec-1"]["received_size"] == size


def test_stop_closes_kept_alive_connections(tmp_path: Path) -> None:
    receiver = Receiver(api_key=KEY).start()
    with httpx.Client() as idle:
        assert idle.get(receiver.base_url + "/health").status_code == 200
        receiver.stop()  # returns although the client keeps its connection open
        with pytest.raises(httpx.TransportError):
            idle.get(receiver.base_url + "/health")


def test_separate_process_with_control_endpoints(tmp_path: Path) -> None:
    with ReceiverProcess(data_dir=tmp_path / "data") as process:
        control = process.control
        body = json.dumps({"cdrs": [cdr(1)]}).encode()
        url = process.base_url + "/mqs/connectors/asterisk/cdr"
        headers = {
            "Authorization": f"Bearer {KEY}",
            "User-Agent": "t",
            "X-Asterisk-Hostname": "h",
            "Idempotency-Key": "k",
        }
        control.fail(503, count=1, retry_after="3")
        first = httpx.post(url, content=body, headers=headers)
        assert (first.status_code, first.headers["Retry-After"]) == (503, "3")
        control.refuse_key()
        assert httpx.post(url, content=body, headers=headers).status_code == 401
        control.refuse_key(False)
        control.poison("event_id", "ev-1", "nope")
        assert httpx.post(url, content=body, headers=headers).status_code == 422
        control.clear_poison()
        control.set_delay(0.01)
        assert httpx.post(url, content=body, headers=headers).status_code == 200
        control.fail(None, count=1)
        with pytest.raises(httpx.TransportError):
            httpx.post(url, content=body, headers=headers)
        control.clear_faults()
        received = control.received()
        assert [item["event_id"] for item in received["cdr_list"]] == ["ev-1"]
        assert received["counts"] == {"ev-1": 1}
        assert control.summary()["answers"]["cdr 401"] == 1
        control.reset()
        assert control.summary()["cdrs"] == 0
        output = process.stop()
    assert process.process.returncode == 0
    assert json.loads(output.strip().splitlines()[-1])["cdrs"] == 0
