"""The recording uploader against a real outbox, real files and the real loopback receiver (no mocks)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import shutil
import sqlite3
import struct
import time
from pathlib import Path

import pytest

from connector.ami.ingest import new_cdr
from connector.api.client import ApiClient
from connector.config import load_settings
from connector.errors import ConfigError
from connector.metrics import REGISTRY
from connector.outbox.notify import NotifyingSink
from connector.outbox.records import Headers, RecordingRow, State
from connector.outbox.store import Store
from connector.recordings.checks import RecordingRules
from connector.recordings.upload import CallLink, call_link, content_type_for, recording_fields, recording_id
from connector.recordings.uploader import RecordingUploader, UploadSettings
from connector.recordings.watcher import RecordingWatcher
from connector.timeutil import utc_now
from tests.doubles.receiver import Receiver
from tests.paths import RECORDING_FIXTURES
from tests.recordings.media import asterisk_wav_header, write_wav
from tests.recordings.uploading import (
    KEY,
    OPTIONS,
    add_recording,
    all_rows,
    pace,
    received,
    run_until_settled,
    until,
    uploader_for,
)

FIXTURE_WAV = RECORDING_FIXTURES / "lab-1795735443.50.wav"


def cdr_headers(uniqueid: str, *, start: str = "2026-11-27 10:00:00", duration: str = "12") -> Headers:
    """A Cdr event's headers as cdr_manager sends them, with a LinkedID mapping."""
    return (
        ("Event", "Cdr"),
        ("Source", "100"),
        ("Destination", "200"),
        ("CallerID", '"Alice" <100>'),
        ("Channel", "PJSIP/100-00000001"),
        ("DestinationChannel", "PJSIP/200-00000002"),
        ("LastApplication", "Dial"),
        ("StartTime", start),
        ("AnswerTime", start),
        ("EndTime", "2026-11-27 10:00:12"),
        ("Duration", duration),
        ("BillableSeconds", duration),
        ("Disposition", "ANSWERED"),
        ("UniqueID", uniqueid),
        ("LinkedID", "1795735000.1"),
    )


async def add_cdr(store: Store, uniqueid: str, **kwargs: str) -> None:
    assert await store.append_cdrs([new_cdr(cdr_headers(uniqueid, **kwargs), time.time())]) == 1


def random_file(path: Path, size: int) -> Path:
    with path.open("wb") as out:
        while size > 0:
            piece = min(size, 1024 * 1024)
            out.write(os.urandom(piece))
            size -= piece
    return path


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


# --- the whole path: watcher → outbox → uploader → receiver ---------------------------------------


def start_wav(path: Path) -> None:
    """Begin a WAV as Asterisk does: a header whose sizes stay 0 until the file is closed."""
    path.write_bytes(asterisk_wav_header(0))


def append_audio(path: Path, data: bytes) -> None:
    with path.open("ab") as out:
        out.write(data)


def finish_wav(path: Path) -> None:
    """Fill in the header sizes, as Asterisk does when it closes the file."""
    data_size = path.stat().st_size - 44
    with path.open("r+b") as out:
        out.seek(4)
        out.write(struct.pack("<I", 36 + data_size))
        out.seek(40)
        out.write(struct.pack("<I", data_size))


async def test_watcher_and_uploader_deliver_a_growing_wav_once_with_its_call(
    store: Store, api: ApiClient, receiver: Receiver, spool: Path, tmp_path: Path
) -> None:
    shutil.copy(FIXTURE_WAV, spool)  # there before start: RECORDING_PROCESS_EXISTING=true takes it
    write_wav(spool / "scratch-1795735501.1.wav", 1.0)  # excluded by pattern
    outside = write_wav(tmp_path / "secret-1795735502.1.wav", 1.0)
    (spool / "escape-1795735502.1.wav").symlink_to(outside)  # a link out of the watch path
    await add_cdr(store, "1795735500.7")
    uploaded_before = metric("recordings_uploaded_total")
    new_rows = asyncio.Event()
    rules = RecordingRules(exclude_patterns=("scratch",))
    watcher = RecordingWatcher(
        [spool],
        rules,
        NotifyingSink(store, new_rows).append_recordings,
        stabilization_s=0.3,
        process_existing=True,
    )
    uploader = RecordingUploader(store, api, OPTIONS, pace(spool, idle_poll_s=30.0), new_rows)
    growing = spool / "out-200-100-1795735500.7.wav"
    tasks = [asyncio.create_task(watcher.run()), asyncio.create_task(uploader.run())]
    try:
        await asyncio.to_thread(start_wav, growing)
        for _ in range(12):  # 8 kHz 16-bit audio in bursts, over about two seconds
            await asyncio.sleep(0.2)
            await asyncio.to_thread(append_audio, growing, os.urandom(3200))
        await asyncio.to_thread(finish_wav, growing)
        await until(lambda: len(received(receiver)) >= 2, timeout_s=30)
        await watcher.scan()  # nothing new: both files are stored once
        await asyncio.sleep(1.0)
    finally:
        uploader.stop()
        tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    rows = {Path(row.path).name: row for row in await all_rows(store)}
    assert sorted(rows) == sorted([FIXTURE_WAV.name, growing.name])
    by_name = {str(record["file_name"]): record for record in received(receiver).values()}
    record = by_name[growing.name]
    assert record["received_size"] == growing.stat().st_size == int(str(record["file_size"]))
    assert record["received_sha256"] == record["sha256"] == sha256_of(growing) == rows[growing.name].sha256
    assert sha256_of(Path(str(record["path"]))) == sha256_of(growing)  # the copy the receiver kept
    assert record["content_type"] == "audio/wav"
    assert (record["uniqueid"], record["linkedid"], record["src_number"], record["dst_number"]) == (
        "1795735500.7",
        "1795735000.1",
        "100",
        "200",
    )
    assert (record["calldate"], record["duration"]) == ("2026-11-27T10:00:00Z", "12")
    assert record["recording_id"] == recording_id(rows[growing.name])
    existing = by_name[FIXTURE_WAV.name]
    assert existing["received_sha256"] == sha256_of(FIXTURE_WAV)
    assert existing["uniqueid"] == "1795735443.50" and "linkedid" not in existing  # no CDR: sent without
    assert receiver.state.summary()["recording_duplicates"] == 0
    assert all(row.state is State.SENT for row in rows.values())
    assert metric("recordings_uploaded_total") - uploaded_before == 2
    assert outside.exists() and growing.exists()  # RECORDING_DELETE_AFTER_UPLOAD is off


# --- deleting after the upload ------------------------------------------------------------------


async def test_delete_after_upload_only_inside_the_watch_paths(
    store: Store, api: ApiClient, receiver: Receiver, spool: Path, tmp_path: Path
) -> None:
    (spool / "day").mkdir()
    inside = random_file(spool / "day" / "in-1795735600.1.wav", 5000)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    outside = random_file(elsewhere / "out-1795735600.2.wav", 5000)
    bytes_before = metric("recording_upload_bytes_total")
    await add_recording(store, inside)
    await add_recording(store, outside)
    uploader = uploader_for(store, api, pace(spool, delete_after_upload=True))
    assert await uploader.run_once() == 2
    rows = {Path(row.path).name: row for row in await all_rows(store)}
    assert all(row.state is State.SENT for row in rows.values())
    assert not inside.exists() and rows[inside.name].deleted_at is not None
    assert outside.exists() and rows[outside.name].deleted_at is None
    assert len(received(receiver)) == 2
    assert metric("recording_upload_bytes_total") - bytes_before == 10_000


async def test_a_rejected_upload_is_failed_and_never_deleted(
    store: Store, api: ApiClient, receiver: Receiver, spool: Path
) -> None:
    audio = random_file(spool / "1795735600.3.wav", 5000)
    await add_recording(store, audio)
    receiver.fail(422, count=1, endpoint="recording", body="unsupported audio")
    failed_before = metric("recordings_failed_total")
    await uploader_for(store, api, pace(spool, delete_after_upload=True)).run_once()
    (row,) = await all_rows(store)
    assert row.state is State.FAILED and row.attempts == 1
    assert row.last_error is not None and "422" in row.last_error and "unsupported audio" in row.last_error
    assert audio.exists()
    assert metric("recordings_failed_total") - failed_before == 1


# --- linking to the CDR -------------------------------------------------------------------------


@pytest.mark.parametrize("cdr_uniqueid", ["1795735700.5", "pbx1-1795735700.5"])
async def test_a_recording_that_arrives_before_its_cdr_is_linked_when_it_comes(
    store: Store, api: ApiClient, receiver: Receiver, spool: Path, cdr_uniqueid: str
) -> None:
    audio = random_file(spool / "1795735700.5.wav", 4000)
    await add_recording(store, audio, uniqueid="1795735700.5")
    uploader = uploader_for(store, api, pace(spool, cdr_wait_s=60.0))
    assert await uploader.run_once() == 1  # no CDR yet: put off, not uploaded
    (row,) = await all_rows(store)
    assert (row.state, row.attempts) == (State.PENDING, 0)
    assert row.next_attempt_at > utc_now()
    assert not received(receiver)
    await add_cdr(store, cdr_uniqueid, start="2026-11-27 10:00:05")
    await add_cdr(store, cdr_uniqueid, start="2026-11-27 10:00:01", duration="30")  # a second leg
    (row,) = await run_until_settled(uploader, store, 1)
    assert (row.state, row.attempts) == (State.SENT, 0)
    (record,) = received(receiver).values()
    assert (record["uniqueid"], record["call_id"]) == (cdr_uniqueid, cdr_uniqueid)
    assert (record["linkedid"], record["src_number"], record["dst_number"]) == ("1795735000.1", "100", "200")
    assert (record["calldate"], record["duration"]) == ("2026-11-27T10:00:01Z", "30")


async def test_without_its_cdr_a_recording_is_uploaded_after_the_wait(
    store: Store, api: ApiClient, receiver: Receiver, spool: Path
) -> None:
    audio = random_file(spool / "1795735800.9.wav", 4000)
    await add_recording(store, audio, uniqueid="1795735800.9")
    uploader = uploader_for(store, api, pace(spool, cdr_wait_s=0.5))
    (row,) = await run_until_settled(uploader, store, 1)
    assert (row.state, row.attempts) == (State.SENT, 0)  # the wait counted no attempt
    (record,) = received(receiver).values()
    assert record["uniqueid"] == "1795735800.9"
    assert not {"linkedid", "src_number", "dst_number", "calldate", "duration"} & set(record)


# --- restarts, outages, refused keys --------------------------------------------------------------


async def test_a_restart_in_the_middle_of_an_upload_resends_the_same_recording_id(
    outbox_path: Path, receiver: Receiver, spool: Path
) -> None:
    audio = random_file(spool / "1795735900.1.wav", 16 * 1024 * 1024)  # beyond the socket buffers
    store = await Store.open(outbox_path)
    api = ApiClient(base_url=receiver.base_url, api_key=KEY, hostname="pbx1", timeout_s=10)
    row = await add_recording(store, audio)
    receiver.set_delay(1.0)  # the receiver reads nothing for a second: the upload stalls mid-body
    uploader = uploader_for(store, api, pace(spool))
    task = asyncio.create_task(uploader.run())
    await until(lambda: row.id in uploader.in_flight, timeout_s=10)  # until it is taken
    await asyncio.sleep(0.3)
    task.cancel()  # the shutdown deadline passed: the upload is abandoned
    with pytest.raises(asyncio.CancelledError):
        await task
    (row,) = await all_rows(store)
    assert (row.state, row.attempts) == (State.PENDING, 0)
    assert row.next_attempt_at <= utc_now()  # nothing to undo: due again for the next start
    await api.aclose()
    await store.close()

    receiver.set_delay(0.0)
    store = await Store.open(outbox_path)  # the next start
    api = ApiClient(base_url=receiver.base_url, api_key=KEY, hostname="pbx1", timeout_s=10)
    try:
        (row,) = await run_until_settled(uploader_for(store, api, pace(spool)), store, 1)
    finally:
        await api.aclose()
        await store.close()
    assert row.state is State.SENT
    assert list(received(receiver)) == [recording_id(row)]
    record = received(receiver)[recording_id(row)]
    assert record["received_sha256"] == sha256_of(audio) == row.sha256
    # The first body never completed, so the receiver took it once; had the first answer been lost
    # instead, the same recording_id would have let the API tell the copy from a new recording.
    assert receiver.state.recording_counts[recording_id(row)] == 1


async def test_an_outage_delays_uploads_but_loses_none(
    store: Store, api: ApiClient, receiver: Receiver, spool: Path
) -> None:
    for n in range(5):
        await add_recording(store, random_file(spool / f"1795736000.{n}.wav", 3000 + n))
    receiver.fail(503, count=4, endpoint="recording", retry_after="0")
    rows = await run_until_settled(uploader_for(store, api, pace(spool)), store, 5)
    assert [row.state for row in rows] == [State.SENT] * 5
    assert sum(row.attempts for row in rows) == 4  # each 503 counted once on its row
    assert {row.sha256 for row in rows} == {sha256_of(Path(row.path)) for row in rows}
    summary = receiver.state.summary()
    assert (summary["recordings"], summary["recording_duplicates"]) == (5, 0)
    assert summary["answers"]["recording 503"] == 4


async def test_a_lost_answer_resends_the_same_recording_id(
    store: Store, api: ApiClient, receiver: Receiver, spool: Path
) -> None:
    row = await add_recording(store, random_file(spool / "1795736050.1.wav", 3000))
    receiver.fail(None, count=1, endpoint="recording", after=True)  # stored, then the line drops
    (row,) = await run_until_settled(uploader_for(store, api, pace(spool)), store, 1)
    assert (row.state, row.attempts) == (State.SENT, 1)
    assert list(received(receiver)) == [recording_id(row)]
    assert receiver.state.summary()["recording_duplicates"] == 1  # the API recognised the copy


async def test_a_refused_key_fails_nothing_and_uploads_resume(
    store: Store, api: ApiClient, receiver: Receiver, spool: Path
) -> None:
    for n in range(3):
        await add_recording(store, random_file(spool / f"1795736100.{n}.wav", 3000))
    receiver.refuse_key()
    uploader = uploader_for(store, api, pace(spool))
    task = asyncio.create_task(uploader.run())
    try:
        await until(lambda: receiver.state.summary()["answers"].get("recording 401", 0) >= 3)
        rows = await all_rows(store)
        assert [(row.state, row.attempts) for row in rows] == [(State.PENDING, 0)] * 3
        receiver.refuse_key(False)
        await until(lambda: len(received(receiver)) >= 3)
    finally:
        uploader.stop()
        await task
    rows = await all_rows(store)
    assert [row.state for row in rows] == [State.SENT] * 3


async def test_an_outcome_that_cannot_be_recorded_holds_the_row_back(
    store: Store, api: ApiClient, receiver: Receiver, spool: Path
) -> None:
    row = await add_recording(store, random_file(spool / "1795736150.1.wav", 3000))
    with sqlite3.connect(store.path) as db:
        db.execute(
            "CREATE TRIGGER no_more BEFORE UPDATE ON recording BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
    db.close()
    uploader = uploader_for(store, api, pace(spool, hold_after_error_s=600.0))
    task = asyncio.create_task(uploader.run())
    try:
        await until(lambda: len(received(receiver)) == 1)
        await asyncio.sleep(0.5)  # several idle polls: a row free again would be uploaded again
        assert row.id in uploader.in_flight
        assert receiver.state.recording_counts[recording_id(row)] == 1
    finally:
        uploader.stop()
        await task
    (row,) = await all_rows(store)
    assert (row.state, row.attempts) == (State.PENDING, 0)


# --- files that changed under us ----------------------------------------------------------------


async def test_vanished_changed_or_swapped_files_fail_with_a_reason(
    store: Store, api: ApiClient, receiver: Receiver, spool: Path, tmp_path: Path
) -> None:
    vanished = random_file(spool / "vanished.wav", 3000)
    changed = random_file(spool / "changed.wav", 3000)
    swapped = random_file(spool / "swapped.wav", 3000)
    piped = random_file(spool / "piped.wav", 3000)
    for path in (vanished, changed, swapped, piped):
        await add_recording(store, path)
    vanished.unlink()
    with changed.open("ab") as out:
        out.write(b"more audio")
    target = random_file(tmp_path / "target.wav", 3000)
    swapped.unlink()
    swapped.symlink_to(target)
    piped.unlink()
    os.mkfifo(piped)  # opening it must neither block nor read it
    uploader = uploader_for(store, api, pace(spool, concurrency=4))
    assert await uploader.run_once() == 4
    errors = {Path(row.path).name: (row.state, row.last_error) for row in await all_rows(store)}
    assert errors["vanished.wav"] == (State.FAILED, "file vanished before upload")
    state, error = errors["changed.wav"]
    assert state is State.FAILED and error is not None
    assert error.startswith("file changed since it was detected")
    state, error = errors["swapped.wav"]
    assert state is State.FAILED and error is not None and "symbolic link" in error
    assert errors["piped.wav"] == (State.FAILED, "cannot read the file: not a regular file")
    assert not received(receiver)


async def test_a_file_changed_during_its_upload_is_never_completed(
    store: Store, api: ApiClient, receiver: Receiver, spool: Path
) -> None:
    audio = random_file(spool / "1795736200.1.wav", 16 * 1024 * 1024)
    await add_recording(store, audio)
    receiver.set_delay(0.5)  # the upload stalls mid-body while the file is rewritten
    uploader = uploader_for(store, api, pace(spool))
    task = asyncio.create_task(uploader.run())
    try:
        await until(lambda: bool(uploader.in_flight), timeout_s=20)  # until it is taken
        status = audio.stat()
        os.utime(audio, (status.st_atime, status.st_mtime + 5))  # same size, new content time
        async with asyncio.timeout(20):
            while True:
                if (await all_rows(store))[0].state is not State.PENDING:
                    break
                await asyncio.sleep(0.02)
    finally:
        uploader.stop()
        await task
    (row,) = await all_rows(store)
    assert row.state is State.FAILED and row.last_error is not None
    assert row.last_error.startswith("file changed since it was detected")
    assert not received(receiver)  # the body was cut before its end: nothing was accepted


# --- the pure parts ------------------------------------------------------------------------------


def recording_row(path: str = "/spool/a.wav", size: int = 100, mtime: float = 1795735443.25) -> RecordingRow:
    return RecordingRow(
        id=1,
        path=path,
        size=size,
        mtime=mtime,
        sha256=None,
        detected_at="2026-11-27T10:00:00.000000Z",
        uniqueid="1795735443.50",
        linkedid=None,
        state=State.PENDING,
        attempts=0,
        next_attempt_at="2026-11-27T10:00:00.000000Z",
        last_error=None,
        sent_at=None,
        deleted_at=None,
    )


def test_recording_id_is_stable_and_follows_the_file_identity() -> None:
    first = recording_id(recording_row())
    assert first == recording_id(recording_row()) and re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != recording_id(recording_row(size=101))
    assert first != recording_id(recording_row(mtime=1795735443.5))
    assert first != recording_id(recording_row(path="/spool/b.wav"))


def test_fields_omit_what_is_unknown() -> None:
    row = recording_row(mtime=1795735443.25)
    fields = recording_fields(row, None)
    assert fields == {
        "recording_id": recording_id(row),
        "file_name": "a.wav",
        "file_size": "100",
        "recorded_at": "2026-11-26T23:24:03.250000Z",
        "uniqueid": "1795735443.50",
        "call_id": "1795735443.50",
    }
    link = CallLink(uniqueid="pbx1-1795735443.50", src_number="100", duration=0)
    linked = recording_fields(row, link)
    assert linked["uniqueid"] == linked["call_id"] == "pbx1-1795735443.50"
    assert (linked["src_number"], linked["duration"]) == ("100", "0")
    assert "dst_number" not in linked and "linkedid" not in linked


def test_content_types_follow_the_extension() -> None:
    assert content_type_for(Path("a.wav")) == content_type_for(Path("b.WAV")) == "audio/wav"
    assert content_type_for(Path("a.mp3")) == "audio/mpeg"
    assert content_type_for(Path("a.gsm")) == "audio/x-gsm"


async def test_call_link_of_no_cdr_is_none() -> None:
    assert call_link([], OPTIONS) is None


def test_settings_build_the_pacing(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDING_UPLOAD_CONCURRENCY", "3")
    monkeypatch.setenv("RECORDING_CDR_WAIT_SECONDS", "0")
    monkeypatch.setenv("RECORDING_WATCH_PATHS", "/spool/a, /spool/b")
    monkeypatch.setenv("RECORDING_DELETE_AFTER_UPLOAD", "true")
    upload = UploadSettings.from_settings(load_settings())
    assert (upload.concurrency, upload.cdr_wait_s, upload.delete_after_upload) == (3, 0.0, True)
    assert upload.watch_paths == (Path("/spool/a"), Path("/spool/b"))
    monkeypatch.delenv("RECORDING_UPLOAD_CONCURRENCY")
    monkeypatch.delenv("RECORDING_CDR_WAIT_SECONDS")
    defaults = UploadSettings.from_settings(load_settings())
    assert (defaults.concurrency, defaults.cdr_wait_s) == (2, 60.0)
    for name, value in (("RECORDING_UPLOAD_CONCURRENCY", "0"), ("RECORDING_CDR_WAIT_SECONDS", "-1")):
        monkeypatch.setenv(name, value)
        with pytest.raises(ConfigError, match=name):
            load_settings()
        monkeypatch.delenv(name)
