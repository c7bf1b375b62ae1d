"""Migration 0003 on an outbox written by the release before it: every row, state and header kept."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from connector.ami.ingest import new_cdr
from connector.cdr.identity import fingerprint_of_json, headers_json
from connector.cdr.raw import headers_of_raw
from connector.outbox.migrate import known_revisions, prepare_database
from connector.outbox.store import Store
from tests.cdr.helpers import all_fixture_cdrs
from tests.paths import FIXTURES

OLD_RELEASE_OUTBOX = FIXTURES / "outbox" / "release-0002.db"
DELIVERY = "id, state, attempts, next_attempt_at, last_error, filter_reason, sent_at, updated_at"


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(sql).fetchall()
    db.close()
    return rows


def _old_copy(tmp_path: Path) -> Path:
    path = tmp_path / "outbox.db"
    shutil.copyfile(OLD_RELEASE_OUTBOX, path)
    assert _rows(path, "SELECT version_num FROM alembic_version") == [("0002",)]
    return path


def test_every_row_and_state_survives(tmp_path: Path) -> None:
    path = _old_copy(tmp_path)
    cdr_columns = f"{DELIVERY}, received_at, dedupe_key, identity, fingerprint, source, uniqueid, linkedid"
    before_cdrs = _rows(path, f"SELECT {cdr_columns} FROM cdr ORDER BY id")
    before_raw = _rows(path, "SELECT id, raw FROM cdr ORDER BY id")
    before_recordings = _rows(path, "SELECT * FROM recording ORDER BY id")
    before_position = _rows(path, "SELECT * FROM csv_position")
    states = {state for _, state, *_ in before_cdrs}
    assert states == {"pending", "sent", "filtered", "failed"}

    prepare_database(path)

    assert _rows(path, "SELECT version_num FROM alembic_version") == [(known_revisions()[1],)]
    assert _rows(path, f"SELECT {cdr_columns} FROM cdr ORDER BY id") == before_cdrs
    assert _rows(path, "SELECT * FROM recording ORDER BY id") == before_recordings
    assert _rows(path, "SELECT * FROM csv_position") == before_position
    after_raw = dict(_rows(path, "SELECT id, raw FROM cdr_raw"))
    assert sorted(after_raw) == [row_id for row_id, _ in before_raw]
    for row_id, old in before_raw:
        old_headers = tuple((name, value) for name, value in json.loads(old))
        assert headers_of_raw(json.loads(after_raw[row_id])) == old_headers
    # The stored fingerprint still is the hash of the frame's headers: a duplicate frame arriving
    # after the upgrade is recognised.
    fingerprints = dict(_rows(path, "SELECT id, fingerprint FROM cdr"))
    for row_id, old in before_raw:
        pairs = tuple((name, value) for name, value in json.loads(old))
        assert fingerprints[row_id] == fingerprint_of_json(headers_json(pairs))


def test_the_repeated_header_is_readable_by_name(tmp_path: Path) -> None:
    path = _old_copy(tmp_path)
    prepare_database(path)
    repeated = _rows(
        path, "SELECT raw ->> '$.UserField', raw ->> '$.UserField#2' FROM cdrs ORDER BY id DESC LIMIT 1"
    )
    first = dict(all_fixture_cdrs()[0])
    assert repeated == [(first["UserField"], "second value")]


async def test_the_same_frames_after_the_upgrade_are_duplicates(tmp_path: Path) -> None:
    path = _old_copy(tmp_path)
    count = _rows(path, "SELECT count(*) FROM cdr")[0][0]
    store = await Store.open(path)
    try:
        frames = all_fixture_cdrs()
        assert await store.append_cdrs([new_cdr(headers, 1795736000.0) for headers in frames]) == 0
        # Pending rows are delivered as before, with the headers they were stored with.
        due = await store.due_cdrs(1000)
        assert {row.state.value for row in due} == {"pending"}
        assert all(row.headers in set(frames) | {(*frames[0], ("UserField", "second value"))} for row in due)
    finally:
        await store.close()
    assert _rows(path, "SELECT count(*) FROM cdr") == [(count,)]


def test_the_views_read_every_row(tmp_path: Path) -> None:
    path = _old_copy(tmp_path)
    prepare_database(path)
    assert _rows(path, "SELECT count(*) FROM cdrs") == _rows(path, "SELECT count(*) FROM cdr")
    assert _rows(path, "SELECT count(*) FROM recordings") == _rows(path, "SELECT count(*) FROM recording")
