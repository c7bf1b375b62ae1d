"""FreePBX recordings: `monitor/YYYY/MM/DD/` names linked by UniqueID, the others by RecordingFile.

Real outbox files, real Cdr frames of the lab captures (a `RecordingFile` header added as
cdr_manager sends it with `recordingfile => RecordingFile` in [mappings]), the real watcher and
the real loopback receiver.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, pool

from connector.ami.ingest import new_cdr
from connector.api.client import ApiClient
from connector.config import load_settings
from connector.outbox import migrate
from connector.outbox.migrate import known_revisions, prepare_database
from connector.outbox.names import CDR_RECORDING_FILE_INDEX
from connector.outbox.notify import NotifyingSink
from connector.outbox.records import Headers, State
from connector.outbox.statements import CDRS_BY_RECORDING_FILE_SQL
from connector.outbox.store import Store
from connector.recordings.checks import uniqueid_from_name
from connector.recordings.upload import recording_file_names
from connector.recordings.uploader import RecordingUploader, UploadSettings
from connector.recordings.watcher import RecordingWatcher
from tests.cdr.helpers import ami_cdrs
from tests.doubles.receiver import Receiver
from tests.paths import AMI_FIXTURES, FIXTURES
from tests.recordings.media import write_wav
from tests.recordings.uploading import (
    OPTIONS,
    add_recording,
    all_rows,
    pace,
    received,
    run_until_settled,
    until,
    uploader_for,
)

# The three Cdr frames of a real call (Alice dials 200, a Local channel rings 101), by UniqueID.
FRAMES = {dict(frame)["UniqueID"]: frame for frame in ami_cdrs(AMI_FIXTURES / "dial-answered.txt")}
CALL_FIELDS = ("uniqueid", "call_id", "src_number", "dst_number", "calldate", "duration")


def with_recording_file(uniqueid: str, recording_file: str) -> Headers:
    """A real frame as cdr_manager sends it with a RecordingFile mapping (custom fields come last)."""
    return (*FRAMES[uniqueid], ("RecordingFile", recording_file))


async def add_frame(store: Store, headers: Headers) -> None:
    assert await store.append_cdrs([new_cdr(headers, time.time())]) == 1


def day_folder(root: Path) -> Path:
    """FreePBX's layout: one folder per day under the monitor folder."""
    folder = root / "2026" / "12" / "03"
    folder.mkdir(parents=True)
    return folder


def call_of(record: dict[str, object]) -> tuple[object, ...]:
    return tuple(record.get(field) for field in CALL_FIELDS)


def call(uniqueid: str, dst: str) -> tuple[object, ...]:
    """The call fields every frame of the capture gives: Alice (1001) at 23:23:14 UTC, 3 s."""
    return (uniqueid, uniqueid, "1001", dst, "2026-11-26T23:23:14Z", "3")


# --- file names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "out-0612345678-101-20261203-101010-1795735443.50.wav",
        "in-101-0612345678-20261203-101010-1795735443.50.wav",
        "exten-102-101-20261203-101010-1795735443.50.wav",
        "q-400-0612345678-20261203-101010-1795735443.50.wav",
        "rg-600-0612345678-20261203-101010-1795735443.50.wav",
        "external-101-0612345678-20261203-101010-1795735443.50.wav",
        "ondemand-101-0612345678-20261203-101010-1795735443.50.WAV",
        "conf-800-101-20261203-101010-1795735443.50.mp3",
        "out--101-20261203-101010-1795735443.50.wav",  # no <to>
        "in-101--20261203-101010-1795735443.50.wav",  # no <from>
        "out---20261203-101010-1795735443.50.wav",
        "out-0612345678.12-101-20261203-101010-1795735443.50.wav",  # a <to> shaped digits.digits
        "in-101-1795735000.7-20261203-101010-1795735443.50.wav",  # a <from> shaped like a UniqueID
        "out-0612345678-101-20261203-101010-pbx1-1795735443.50.wav",  # systemname=pbx1
    ],
)
def test_freepbx_names_give_the_uniqueid_at_their_end(name: str) -> None:
    assert uniqueid_from_name(name) == "1795735443.50"


@pytest.mark.parametrize(
    "name", ["custom-name-abc.wav", "out-0612345678-101-20261203-101010.wav", "20261203-101010.wav"]
)
def test_names_without_a_uniqueid_give_none(name: str) -> None:
    assert uniqueid_from_name(name) is None


def test_a_recording_is_named_by_its_base_name_or_its_path() -> None:
    path = "/var/spool/asterisk/monitor/2026/12/03/custom-name-abc.wav"
    assert recording_file_names(path) == ("custom-name-abc.wav", path)


# --- watcher → outbox → uploader → receiver ---------------------------------------------------------


async def test_a_freepbx_monitor_tree_is_linked_by_uniqueid_and_by_recordingfile(
    store: Store,
    api: ApiClient,
    receiver: Receiver,
    tmp_path: Path,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monitor = tmp_path / "monitor"
    day = day_folder(monitor)
    by_uniqueid = write_wav(day / "out-0612345678-1001-20261203-101010-1795735394.16.wav", 1.0)
    by_name = write_wav(day / "custom-name-abc.wav", 1.0)
    by_path = write_wav(day / "by-path.wav", 1.0)
    unmatched = write_wav(day / "no-call-names-me.wav", 1.0)
    await add_frame(store, with_recording_file("1795735394.16", by_uniqueid.name))
    await add_frame(store, with_recording_file("1795735394.19", "custom-name-abc.wav"))
    await add_frame(store, with_recording_file("1795735394.17", str(by_path.resolve())))
    for name, value in {
        "RECORDING_WATCH_PATHS": str(monitor),
        "RECORDING_PROCESS_EXISTING": "true",
        "RECORDING_STABILIZATION_TIME": "0.3",
        "RECORDING_CDR_WAIT_SECONDS": "0",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    new_rows = asyncio.Event()
    watcher = RecordingWatcher.from_settings(settings, NotifyingSink(store, new_rows).append_recordings)
    upload = dataclasses.replace(UploadSettings.from_settings(settings), idle_poll_s=0.2)
    uploader = RecordingUploader(store, api, OPTIONS, upload, new_rows)
    tasks = [asyncio.create_task(watcher.run()), asyncio.create_task(uploader.run())]
    try:
        await until(lambda: len(received(receiver)) >= 4, timeout_s=30)
    finally:
        uploader.stop()
        tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    by_file = {str(record["file_name"]): record for record in received(receiver).values()}
    assert call_of(by_file[by_uniqueid.name]) == call("1795735394.16", "200")
    assert call_of(by_file[by_name.name]) == call("1795735394.19", "101")
    assert call_of(by_file[by_path.name]) == call("1795735394.17", "1001")
    assert call_of(by_file[unmatched.name]) == (None,) * len(CALL_FIELDS)  # as without a mapping
    rows = {Path(row.path).name: row for row in await all_rows(store)}
    assert rows[by_uniqueid.name].uniqueid == "1795735394.16"
    assert rows[by_name.name].uniqueid is None  # the name carries none: the link comes from the CDR
    assert all(row.state is State.SENT for row in rows.values())


@pytest.mark.parametrize("form", ["base name", "full path"])
async def test_a_recording_without_uniqueid_waits_for_the_cdr_naming_it(
    store: Store, api: ApiClient, receiver: Receiver, spool: Path, form: str
) -> None:
    audio = write_wav(day_folder(spool) / "ondemand-custom.wav", 1.0)
    row = await add_recording(store, audio)
    assert row.uniqueid is None
    uploader = uploader_for(store, api, pace(spool, cdr_wait_s=60.0))
    assert await uploader.run_once() == 1  # no CDR names it yet: put off, not uploaded
    (row,) = await all_rows(store)
    assert (row.state, row.attempts) == (State.PENDING, 0)
    assert not received(receiver)
    await add_frame(store, with_recording_file("1795735394.16", "someone-else.wav"))
    recording_file = audio.name if form == "base name" else row.path
    await add_frame(store, with_recording_file("1795735394.19", recording_file))
    (row,) = await run_until_settled(uploader, store, 1)
    assert (row.state, row.attempts) == (State.SENT, 0)
    (record,) = received(receiver).values()
    assert call_of(record) == call("1795735394.19", "101")


async def test_a_recording_no_cdr_names_goes_without_call_details_after_the_wait(
    store: Store, api: ApiClient, receiver: Receiver, spool: Path
) -> None:
    await add_frame(store, with_recording_file("1795735394.16", "another.wav"))
    await add_frame(store, with_recording_file("1795735394.19", ""))  # FreePBX: a call not recorded
    await add_recording(store, write_wav(day_folder(spool) / "unknown.wav", 1.0))
    (row,) = await run_until_settled(uploader_for(store, api, pace(spool, cdr_wait_s=0.3)), store, 1)
    assert (row.state, row.attempts) == (State.SENT, 0)
    (record,) = received(receiver).values()
    assert call_of(record) == (None,) * len(CALL_FIELDS)


# --- the look-up and its index ------------------------------------------------------------------


async def test_the_look_up_matches_either_name_and_nothing_else(store: Store) -> None:
    await add_frame(store, with_recording_file("1795735394.16", "a.wav"))
    await add_frame(store, with_recording_file("1795735394.19", "/var/spool/asterisk/monitor/a.wav"))
    await add_frame(store, FRAMES["1795735394.17"])  # no RecordingFile header at all
    found = await store.cdrs_by_recording_file(recording_file_names("/var/spool/asterisk/monitor/a.wav"))
    assert [row.uniqueid for row in found] == ["1795735394.16", "1795735394.19"]
    assert await store.cdrs_by_recording_file(["A.wav", "b.wav"]) == []  # exact and case-sensitive
    assert await store.cdrs_by_recording_file([]) == []


async def test_the_look_up_uses_the_recordingfile_index(store: Store) -> None:
    await add_frame(store, with_recording_file("1795735394.16", "a.wav"))
    with sqlite3.connect(store.path) as db:
        plan = [
            row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {CDRS_BY_RECORDING_FILE_SQL}", ('["a.wav"]',))
        ]
    db.close()
    assert f"SEARCH cdr_raw USING INDEX {CDR_RECORDING_FILE_INDEX} (<expr>=?)" in plan, plan
    assert not any(step.startswith("SCAN cdr") for step in plan), plan


# --- migration 0004 on an outbox at 0003 ---------------------------------------------------------


def _migrate(path: Path, operation: str, revision: str) -> None:
    engine = create_engine(f"sqlite:///{path}", poolclass=pool.NullPool)
    with engine.begin() as connection:
        config = migrate._alembic_config()
        config.attributes["connection"] = connection
        getattr(command, operation)(config, revision)
    engine.dispose()


def _rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(sql).fetchall()
    db.close()
    return rows


async def test_migration_0004_indexes_an_outbox_at_0003_and_keeps_every_row(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    shutil.copyfile(FIXTURES / "outbox" / "release-0002.db", path)
    _migrate(path, "upgrade", "0003")
    with sqlite3.connect(path) as db:
        (first,) = db.execute("SELECT min(id) FROM cdr_raw").fetchone()
        db.execute(
            "UPDATE cdr_raw SET raw = json_set(raw, '$.RecordingFile', 'old-call.wav') WHERE id = ?", (first,)
        )
    db.close()
    before = _rows(path, "SELECT id, raw FROM cdr_raw ORDER BY id")
    index_sql = f"SELECT name FROM sqlite_master WHERE name = '{CDR_RECORDING_FILE_INDEX}'"
    assert _rows(path, index_sql) == []

    prepare_database(path)

    assert _rows(path, "SELECT version_num FROM alembic_version") == [(known_revisions()[1],)]
    assert _rows(path, index_sql) == [(CDR_RECORDING_FILE_INDEX,)]
    assert _rows(path, "SELECT id, raw FROM cdr_raw ORDER BY id") == before
    store = await Store.open(path)
    try:
        assert [row.id for row in await store.cdrs_by_recording_file(["old-call.wav"])] == [first]
    finally:
        await store.close()
    _migrate(path, "downgrade", "0003")
    assert _rows(path, index_sql) == []
    assert _rows(path, "SELECT id, raw FROM cdr_raw ORDER BY id") == before
