"""`connector salvage`: every readable row of a damaged outbox imported once, in its state."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from connector.outbox.damaged import probe_last_id
from connector.outbox.migrate import prepare_database
from connector.outbox.quarantine import connect_read_only
from connector.outbox.records import CsvPosition, Delivery, NewCdr, SalvagedCdr, State
from connector.outbox.salvage import salvage_file
from connector.outbox.store import Store
from connector.timeutil import utc_now
from tests.conftest import CliRunner
from tests.outbox.damage import build_outbox, damage_leaf, synthetic_rows
from tests.paths import FIXTURES

pytestmark = pytest.mark.timeout(120)

CDRS = 3000
RECORDINGS = 6
KEPT = (
    "received_at, identity, fingerprint, source, uniqueid, linkedid, state, attempts, last_error,"
    " filter_reason, sent_at, updated_at"
)
COUNTS_LINE = re.compile(
    r"^salvage: read ([\d,]+) rows, imported ([\d,]+), already present ([\d,]+), unreadable ([\d,]+)$"
)


def _rows(path: Path, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(sql, params).fetchall()
    db.close()
    return rows


def _cdrs_by_key(path: Path) -> dict[str, tuple[Any, ...]]:
    """Every CDR of a schema-0003 outbox by dedupe key: its kept columns, its headers, its old id."""
    rows = _rows(
        path, f"SELECT dedupe_key, {KEPT}, raw, next_attempt_at, id FROM cdr JOIN cdr_raw USING (id)"
    )
    return {row[0]: row[1:] for row in rows}


def _recordings_by_file(path: Path) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    columns = "sha256, detected_at, uniqueid, linkedid, state, attempts, last_error, filter_reason, sent_at"
    rows = _rows(path, f"SELECT path, size, mtime, {columns}, deleted_at, updated_at FROM recording")
    return {row[:3]: row[3:] for row in rows}


def _sha(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(scope="module")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real outbox of 3000 CDRs and 6 recordings in every state, built once for the module."""
    path = tmp_path_factory.mktemp("healthy") / "outbox.db"
    asyncio.run(build_outbox(path, CDRS, recording_count=RECORDINGS))
    return path


def _copy(healthy: Path, folder: Path) -> Path:
    target = folder / "outbox.db.corrupt-20261127T134500Z"
    shutil.copyfile(healthy, target)
    return target


async def _salvage_into(live: Path, damaged: Path) -> Any:
    store = await Store.open(live)
    try:
        return await salvage_file(damaged, store)
    finally:
        await store.close()


@pytest.mark.parametrize("table", ["cdr", "cdr_raw"])
async def test_a_damaged_page_in_the_middle_loses_only_its_rows(
    healthy: Path, tmp_path: Path, outbox_path: Path, table: str
) -> None:
    damaged = _copy(healthy, tmp_path)
    before = _cdrs_by_key(damaged)
    leaf = damage_leaf(damaged, table)
    lost = set(leaf.ids)
    assert 0 < len(lost) < 100

    started = utc_now()
    counts = await _salvage_into(outbox_path, damaged)

    assert (counts.read, counts.unreadable) == (CDRS - len(lost) + RECORDINGS, len(lost))
    assert (counts.imported, counts.present) == (counts.read, 0)
    after = _cdrs_by_key(outbox_path)
    assert set(after) == {key for key, row in before.items() if row[-1] not in lost}
    for key, row in after.items():
        old = before[key]
        assert row[:12] == old[:12], key  # state, attempts, errors, times, source, fingerprint ...
        assert json.loads(row[12]) == json.loads(old[12])
        if row[6] == State.PENDING:  # due at once, also the one that waited for a retry
            assert row[13] <= utc_now() and row[13] >= started
        else:
            assert row[13] == old[13]
    assert {row[6] for row in after.values()} == set(State)
    assert _recordings_by_file(outbox_path) == _recordings_by_file(damaged)
    assert counts.lost_cdrs.lost == len(lost)


async def test_every_readable_pending_row_is_due_exactly_once(
    healthy: Path, tmp_path: Path, outbox_path: Path
) -> None:
    damaged = _copy(healthy, tmp_path)
    before = _cdrs_by_key(damaged)
    lost = set(damage_leaf(damaged, "cdr").ids)
    readable_pending = {key for key, row in before.items() if row[6] == "pending" and row[-1] not in lost}

    await _salvage_into(outbox_path, damaged)
    await _salvage_into(outbox_path, damaged)

    store = await Store.open(outbox_path)
    try:
        due = await store.due_cdrs(10 * CDRS)
    finally:
        await store.close()
    keys = [row.dedupe_key for row in due]
    assert len(keys) == len(set(keys))
    assert set(keys) == readable_pending


async def test_salvaging_twice_imports_nothing_more(healthy: Path, tmp_path: Path, outbox_path: Path) -> None:
    damaged = _copy(healthy, tmp_path)
    damage_leaf(damaged, "cdr_raw")
    first = await _salvage_into(outbox_path, damaged)
    rows_after_first = _rows(outbox_path, "SELECT count(*) FROM cdr")

    second = await _salvage_into(outbox_path, damaged)

    assert (second.read, second.unreadable) == (first.read, first.unreadable)
    assert (second.imported, second.present) == (0, first.read)
    assert _rows(outbox_path, "SELECT count(*) FROM cdr") == rows_after_first


async def test_the_last_page_damaged_its_ids_are_still_walked(
    healthy: Path, tmp_path: Path, outbox_path: Path
) -> None:
    damaged = _copy(healthy, tmp_path)
    leaf = damage_leaf(damaged, "cdr", where=1.0)
    assert max(leaf.ids) == CDRS  # max(id) cannot be read any more: sqlite_sequence says where to stop

    counts = await _salvage_into(outbox_path, damaged)

    assert counts.unreadable == len(leaf.ids)
    assert counts.lost_cdrs.before is None  # lost at the end of the file
    assert _rows(outbox_path, "SELECT count(*) FROM cdr") == [(CDRS - len(leaf.ids),)]


async def test_rows_still_in_the_wal_are_read_and_no_file_changes(
    healthy: Path, tmp_path: Path, outbox_path: Path
) -> None:
    # A file quarantined with a hot WAL: its last rows are only in the -wal, which was moved with it.
    live = tmp_path / "old" / "outbox.db"
    live.parent.mkdir()
    shutil.copyfile(healthy, live)
    store = await Store.open(live)
    try:
        assert await store.append_cdrs(synthetic_rows(CDRS, 50)) == 50
        damaged = tmp_path / "outbox.db.corrupt-20261127T134500Z"
        for suffix in ("", "-wal", "-shm"):
            shutil.copyfile(live.with_name(live.name + suffix), damaged.with_name(damaged.name + suffix))
    finally:
        await store.close()
    files = [damaged.with_name(damaged.name + suffix) for suffix in ("", "-wal", "-shm")]
    assert files[1].stat().st_size > 0
    hashes = [_sha(path) for path in files]

    counts = await _salvage_into(outbox_path, damaged)

    assert (counts.read, counts.unreadable) == (CDRS + 50 + RECORDINGS, 0)
    assert [_sha(path) for path in files] == hashes


async def test_an_outbox_of_the_release_before_0003_keeps_every_row_and_header(
    tmp_path: Path, outbox_path: Path
) -> None:
    damaged = tmp_path / "outbox.db.corrupt-20261127T134500Z"
    shutil.copyfile(FIXTURES / "outbox" / "release-0002.db", damaged)
    migrated = tmp_path / "migrated.db"
    shutil.copyfile(damaged, migrated)
    prepare_database(migrated)  # what the upgrade makes of the same rows, to compare with

    counts = await _salvage_into(outbox_path, damaged)

    expected = _cdrs_by_key(migrated)
    after = _cdrs_by_key(outbox_path)
    assert set(after) == set(expected)
    for key, row in after.items():
        assert row[:12] == expected[key][:12]
        assert json.loads(row[12]) == json.loads(expected[key][12])  # `Name#2` for a repeated header
    assert _recordings_by_file(outbox_path) == _recordings_by_file(migrated)
    assert _rows(outbox_path, "SELECT path, inode, offset, line FROM csv_position") == _rows(
        migrated, "SELECT path, inode, offset, line FROM csv_position"
    )
    assert (counts.read, counts.imported, counts.unreadable) == (len(after) + 4, len(after) + 4, 0)


def _salvaged(cdr: NewCdr, occurrence: int, state: State = State.SENT) -> SalvagedCdr:
    delivery = Delivery(
        state, 1, "2026-11-27T00:00:00.000000Z", None, None, None, "2026-11-27T00:00:00.000000Z"
    )
    return SalvagedCdr(replace(cdr, occurrence=occurrence), delivery)


def _twin(cdr: NewCdr, extra: str, *, csv: bool = False) -> NewCdr:
    """Another frame with the same identity (a ForkCDR copy), or the CDR as read from a CSV line."""
    headers = (*cdr.headers, ("X-Twin", extra))
    fingerprint = None if csv else hashlib.sha256(extra.encode()).hexdigest()[:32]
    return replace(cdr, headers=headers, fingerprint=fingerprint, raw_json=None)


async def _keys(store: Store, uniqueid: str) -> list[tuple[str, str | None]]:
    return [(row.dedupe_key, row.state.value) for row in await store.cdrs_by_uniqueid(uniqueid)]


async def test_a_frame_keeps_its_number_when_it_is_free(store: Store) -> None:
    (frame,) = synthetic_rows(0, 1)
    # Twin A (#1) was on the damaged page; twin B (#2) is read: it keeps #2, its event_id unchanged.
    assert await store.import_salvaged([_salvaged(_twin(frame, "B"), 2)]) == (1, 0)
    assert await _keys(store, frame.uniqueid) == [(f"{frame.identity}#2", "sent")]
    # Twin A's CSV line, recovered by `connector backfill`, still finds its own key free.
    assert await store.append_cdrs([replace(frame, fingerprint=None, occurrence=1)]) == 1


async def test_a_frame_stored_under_another_number_is_already_present(store: Store) -> None:
    (frame,) = synthetic_rows(0, 1)
    twin_a, twin_b = _twin(frame, "A"), _twin(frame, "B")
    assert await store.append_cdrs([twin_b]) == 1  # the live outbox got B first: B is #1

    imported = await store.import_salvaged([_salvaged(twin_a, 1), _salvaged(twin_b, 2)])

    assert imported == (1, 1)  # B is there whatever its number; A's #1 is B's: A takes the next one
    assert await _keys(store, frame.uniqueid) == [
        (f"{frame.identity}#1", "pending"),
        (f"{frame.identity}#2", "sent"),
    ]


async def test_a_frame_whose_csv_line_is_stored_is_already_present(store: Store) -> None:
    (frame,) = synthetic_rows(0, 1)
    assert await store.append_cdrs([replace(frame, fingerprint=None, occurrence=1)]) == 1
    salvaged_csv_row = _salvaged(_twin(frame, "", csv=True), 1)

    assert await store.import_salvaged([_salvaged(frame, 1), salvaged_csv_row]) == (0, 2)
    (row,) = await store.cdrs_by_uniqueid(frame.uniqueid)
    assert (row.source, row.state) == ("ami", State.PENDING)  # adopted the frame, kept its own state


async def test_the_live_csv_position_is_kept(store: Store) -> None:
    await store.append_cdrs([], CsvPosition("/var/log/asterisk/cdr-csv/Master.csv", 7, 9999, 99))
    salvaged = [
        CsvPosition("/var/log/asterisk/cdr-csv/Master.csv", 7, 5678, 42),
        CsvPosition("/var/log/asterisk/cdr-custom/Master.csv", 8, 10, 1),
    ]

    assert await store.import_salvaged(positions=salvaged) == (0, 0)

    assert await store.csv_position("/var/log/asterisk/cdr-csv/Master.csv") == CsvPosition(
        "/var/log/asterisk/cdr-csv/Master.csv", 7, 9999, 99
    )
    assert await store.csv_position("/var/log/asterisk/cdr-custom/Master.csv") == salvaged[1]


def test_probing_bounds_the_ids_when_nothing_says_where_they_end(healthy: Path) -> None:
    connection = connect_read_only(healthy)
    try:
        bound = probe_last_id(connection, "cdr")
    finally:
        connection.close()
    assert CDRS < bound <= 2 * CDRS


# The command line: one line for each mistake, the counts at the end.


def _salvage(run_connector: CliRunner, data_dir: Path, file: Path) -> Any:
    return run_connector("salvage", str(file), env={"DATA_DIR": str(data_dir)})


def _one_error_line(result: Any, *fragments: str) -> None:
    assert result.returncode == 2
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and all(fragment in line for fragment in fragments), line


def test_the_command_prints_the_counts_last(
    run_connector: CliRunner, healthy: Path, tmp_path: Path, data_dir: Path
) -> None:
    damaged = _copy(healthy, tmp_path)
    lost = damage_leaf(damaged, "cdr").ids

    result = _salvage(run_connector, data_dir, damaged)

    assert result.returncode == 0, result.stderr
    *before, last = result.stdout.strip().splitlines()
    match = COUNTS_LINE.match(last)
    assert match, last
    read, imported, present, unreadable = (int(group.replace(",", "")) for group in match.groups())
    assert (read, imported, present, unreadable) == (CDRS - len(lost) + RECORDINGS, read, 0, len(lost))
    (hint,) = before
    assert "connector backfill --file" in hint and "--from 2026-11-25" in hint
    again = _salvage(run_connector, data_dir, damaged)
    assert (
        again.stdout.strip()
        .splitlines()[-1]
        .endswith(f"imported 0, already present {read:,}, unreadable {unreadable}")
    )


def test_a_missing_file_is_one_line(run_connector: CliRunner, tmp_path: Path, data_dir: Path) -> None:
    missing = tmp_path / "outbox.db.corrupt-nothing"
    _one_error_line(_salvage(run_connector, data_dir, missing), str(missing), "does not exist")


def test_the_live_outbox_itself_is_refused(
    run_connector: CliRunner, data_dir: Path, outbox_path: Path
) -> None:
    prepare_database(outbox_path)
    _one_error_line(_salvage(run_connector, data_dir, outbox_path), "is the live outbox")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"uniqueid,src,dst\n1795700000.1,1001,200\n", "is not a SQLite database"),
        (b"", "is empty"),
        (b"SQLite format 3\x00" + b"\xff" * 8000, "its schema cannot be read"),
    ],
)
def test_a_file_that_is_no_outbox_is_one_line(
    run_connector: CliRunner, tmp_path: Path, data_dir: Path, content: bytes, problem: str
) -> None:
    other = tmp_path / "Master.csv"
    other.write_bytes(content)
    _one_error_line(_salvage(run_connector, data_dir, other), str(other), problem)


def test_another_applications_database_is_one_line(
    run_connector: CliRunner, tmp_path: Path, data_dir: Path
) -> None:
    other = tmp_path / "asterisk.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE cdr (calldate TEXT, src TEXT)")
    db.close()
    _one_error_line(_salvage(run_connector, data_dir, other), "is not a connector outbox", "cdr")
