"""A damaged outbox: the check finds it without writing a byte, the move keeps it whole, the CLI refuses it.

The damaged files are made from real outboxes (rows stored through the store, a hot WAL left by a
writer that died without closing); tests/e2e/test_quarantine_run.py uses the same ones against a
real `connector run`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sqlite3
import struct
import sys
from collections.abc import Awaitable, Callable
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.errors import OutboxCorrupt, OutboxError
from connector.outbox.migrate import prepare_database
from connector.outbox.quarantine import (
    COMPANIONS,
    check_integrity,
    companion,
    connect_read_only,
    free_quarantine_name,
    move_aside,
    quarantine_name,
    quarantined_files,
)
from connector.outbox.records import Kind
from connector.outbox.store import Store
from tests.conftest import CliRunner, build_cdr
from tests.outbox.damage import LEAF_TABLE_PAGE
from tests.paths import REPO

ROWS = 2_000
HOT_ROWS = 50
# Not a b-tree page: its first byte (11) is no page type SQLite knows.
GARBAGE = bytes((i * 37 + 11) % 251 for i in range(65_536))
WHEN = datetime(2026, 11, 27, 13, 45, 0, tzinfo=UTC)

# A writer that stores rows and dies without closing, like a `connector run` killed by SIGKILL or
# a power cut: the rows are committed in the -wal, not yet copied into the file.
_DIE_AFTER_APPEND = """
import asyncio, os, sys
from pathlib import Path
from connector.outbox.records import Kind
from connector.outbox.store import Store
from tests.conftest import build_cdr

async def main() -> None:
    store = await Store.open(Path(sys.argv[1]))
    first, count = int(sys.argv[2]), int(sys.argv[3])
    await store.append_cdrs([build_cdr(n) for n in range(first, first + count)])
    os._exit(0)

asyncio.run(main())
"""

Damage = Callable[[Path], Awaitable[None]]


def digests(path: Path) -> dict[str, str]:
    """The sha256 of the database file and of each of its -wal/-shm present, by suffix."""
    found = {}
    for suffix in ("", *COMPANIONS):
        file = companion(path, suffix)
        if file.exists():
            found[suffix] = hashlib.sha256(file.read_bytes()).hexdigest()
    return found


async def real_outbox(path: Path, rows: int = ROWS) -> None:
    """An outbox holding `rows` CDRs stored through the store, closed (its WAL copied into the file)."""
    store = await Store.open(path)
    try:
        await store.append_cdrs([build_cdr(n) for n in range(rows)])
    finally:
        await store.close()


async def leave_hot_wal(path: Path, first: int = ROWS, count: int = HOT_ROWS) -> None:
    """Store `count` more rows in a child that then dies: a -wal and -shm stay, holding them."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DIE_AFTER_APPEND, str(path), str(first), str(count), cwd=REPO
    )
    assert await child.wait() == 0
    assert companion(path, "-wal").stat().st_size > 0 and companion(path, "-shm").exists()


def wal_pages(path: Path) -> set[int]:
    """The pages the -wal holds a newer copy of (SQLite reads those from the -wal, not the file)."""
    wal = companion(path, "-wal")
    if not wal.exists() or wal.stat().st_size == 0:
        return set()
    data = wal.read_bytes()
    (page_size,) = struct.unpack(">I", data[8:12])
    frame = 24 + page_size
    return {struct.unpack(">I", data[at : at + 4])[0] for at in range(32, len(data) - frame + 1, frame)}


def damage_middle_page(path: Path) -> int:
    """Overwrite with garbage a table leaf in the middle of the file that the -wal has no copy of."""
    data = path.read_bytes()
    (page_size,) = struct.unpack(">H", data[16:18])
    pages = len(data) // page_size
    newer = wal_pages(path)
    # A table leaf, whichever b-tree lies mid-file once migrations add pages: rows read from it
    # fail (`malformed`), where a damaged index page is only one more line of quick_check's list.
    page = next(
        number
        for number in range(pages // 2, pages)
        if number not in newer and data[(number - 1) * page_size] == LEAF_TABLE_PAGE
    )
    with path.open("r+b") as handle:
        handle.seek((page - 1) * page_size)  # pages are numbered from 1
        handle.write(GARBAGE[:page_size])
    return page


def cut_to_a_third(path: Path) -> None:
    """Drop the last two thirds of the file."""
    with path.open("r+b") as handle:
        handle.truncate(handle.seek(0, 2) // 3)


def write_noise(path: Path) -> None:
    """64 KiB of (repeatable) random bytes."""
    path.write_bytes(random.Random(13).randbytes(64 * 1024))


async def random_bytes(path: Path) -> None:
    """Not a database at all."""
    write_noise(path)


async def truncated(path: Path) -> None:
    """A real outbox cut to a third of its length (a copy or a disk that stopped short)."""
    await real_outbox(path)
    cut_to_a_third(path)


async def damaged_page(path: Path) -> None:
    """A real outbox with rows and a hot WAL, one page in the middle of the file overwritten."""
    await real_outbox(path)
    await leave_hot_wal(path)
    damage_middle_page(path)


DAMAGES: dict[str, Damage] = {
    "random-bytes": random_bytes,
    "truncated": truncated,
    "damaged-page": damaged_page,
}


def unchanged(before: dict[str, str], path: Path) -> bool:
    """Whether every file of `before` (by suffix) still has its bytes at `path`."""
    after = digests(path)
    return all(after.get(suffix) == digest for suffix, digest in before.items())


async def cdr_count(path: Path) -> int:
    """How many CDRs the outbox holds, read through the store."""
    store = await Store.open(path)
    try:
        stats = await store.stats()
    finally:
        await store.close()
    return sum(stats.tables[Kind.CDR].counts.values())


# ---- names ---------------------------------------------------------------------------------------


def test_the_quarantine_name_is_the_utc_second_and_a_taken_one_is_never_reused(outbox_path: Path) -> None:
    local = WHEN.astimezone(datetime.now().astimezone().tzinfo)
    assert quarantine_name(outbox_path, local).name == "outbox.db.corrupt-20261127T134500Z"
    assert quarantine_name(outbox_path, WHEN, 3).name == "outbox.db.corrupt-20261127T134500Z-3"
    assert free_quarantine_name(outbox_path, WHEN) == quarantine_name(outbox_path, WHEN)
    companion(quarantine_name(outbox_path, WHEN), "-wal").write_bytes(b"an earlier one's WAL")
    assert free_quarantine_name(outbox_path, WHEN) == quarantine_name(outbox_path, WHEN, 2)


def test_quarantined_files_lists_the_database_files_oldest_first(outbox_path: Path) -> None:
    later = quarantine_name(outbox_path, datetime(2026, 12, 1, tzinfo=UTC))
    earlier = quarantine_name(outbox_path, WHEN)
    again = quarantine_name(outbox_path, WHEN, 2)
    for file in (later, earlier, again, companion(earlier, "-wal"), companion(again, "-shm")):
        file.write_bytes(b"x")
    outbox_path.write_bytes(b"")
    assert quarantined_files(outbox_path) == [earlier, again, later]


# ---- the check -----------------------------------------------------------------------------------


async def test_a_healthy_outbox_with_a_hot_wal_passes_and_not_a_byte_is_written(outbox_path: Path) -> None:
    await real_outbox(outbox_path)
    await leave_hot_wal(outbox_path)
    before = digests(outbox_path)
    check_integrity(outbox_path)
    assert digests(outbox_path) == before
    assert await cdr_count(outbox_path) == ROWS + HOT_ROWS  # the rows of the -wal were kept


def test_a_missing_or_empty_file_passes(outbox_path: Path) -> None:
    check_integrity(outbox_path)
    outbox_path.write_bytes(b"")
    check_integrity(outbox_path)
    assert outbox_path.read_bytes() == b""


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
async def test_damage_is_found_and_not_a_byte_is_written(outbox_path: Path, damage: Damage) -> None:
    await damage(outbox_path)
    before = digests(outbox_path)
    with pytest.raises(OutboxCorrupt) as raised:
        check_integrity(outbox_path)
    assert raised.value.path == outbox_path
    assert raised.value.problem.startswith(("is not a SQLite database", "is corrupt or unreadable ("))
    assert unchanged(before, outbox_path)


async def test_a_damaged_middle_page_is_found_only_by_the_full_check(outbox_path: Path) -> None:
    await damaged_page(outbox_path)
    # What opening the file reads (the schema, the revision) is intact: only quick_check sees it.
    with closing(connect_read_only(outbox_path)) as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchone()
    with pytest.raises(OutboxCorrupt, match=r"is corrupt or unreadable \(.*malformed"):
        prepare_database(outbox_path)


async def test_a_locked_outbox_is_refused_not_called_corrupt(outbox_path: Path) -> None:
    await real_outbox(outbox_path, rows=10)
    holder = sqlite3.connect(outbox_path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(OutboxError, match=r"cannot be read \(database is locked\)") as raised:
            check_integrity(outbox_path)
        assert not isinstance(raised.value, OutboxCorrupt)
    finally:
        holder.close()


async def test_another_applications_damaged_database_is_refused_as_not_ours(outbox_path: Path) -> None:
    with closing(sqlite3.connect(outbox_path)) as db, db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO users (name) VALUES (?)", [("x" * 200,) for _ in range(500)])
    damage_middle_page(outbox_path)
    with pytest.raises(OutboxError, match="is not a connector outbox") as raised:
        prepare_database(outbox_path)
    assert not isinstance(raised.value, OutboxCorrupt)  # `run` leaves it where it is


async def test_a_newer_connectors_damaged_outbox_is_refused_as_newer(outbox_path: Path) -> None:
    await real_outbox(outbox_path)
    with closing(sqlite3.connect(outbox_path)) as db, db:
        db.execute("UPDATE alembic_version SET version_num = '9999'")
    damage_middle_page(outbox_path)
    with pytest.raises(OutboxError, match="has schema 9999, newer than this connector") as raised:
        prepare_database(outbox_path)
    assert not isinstance(raised.value, OutboxCorrupt)


# ---- the move ------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
async def test_move_aside_keeps_every_byte_and_a_fresh_outbox_takes_its_place(
    outbox_path: Path, damage: Damage
) -> None:
    await damage(outbox_path)
    before = digests(outbox_path)
    with pytest.raises(OutboxCorrupt):
        prepare_database(outbox_path)

    moved = move_aside(outbox_path, WHEN)

    assert moved.database == quarantine_name(outbox_path, WHEN)
    assert unchanged(before, moved.database)
    assert set(moved.companions) == {companion(moved.database, suffix) for suffix in COMPANIONS} & set(
        moved.database.parent.iterdir()
    )
    assert not any(companion(outbox_path, suffix).exists() for suffix in ("", *COMPANIONS))
    store = await Store.open(outbox_path)
    try:
        assert await store.append_cdrs([build_cdr(n) for n in range(3)]) == 3
    finally:
        await store.close()
    assert await cdr_count(outbox_path) == 3
    assert unchanged(before, moved.database)


async def test_move_aside_never_overwrites_an_earlier_quarantine(outbox_path: Path) -> None:
    earlier = quarantine_name(outbox_path, WHEN)
    earlier.write_bytes(b"the outbox moved aside a moment ago")
    await random_bytes(outbox_path)
    before = digests(outbox_path)
    moved = move_aside(outbox_path, WHEN)
    assert moved.database == quarantine_name(outbox_path, WHEN, 2)
    assert earlier.read_bytes() == b"the outbox moved aside a moment ago"
    assert unchanged(before, moved.database)


# ---- the commands that only use the outbox refuse it ---------------------------------------------


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
@pytest.mark.parametrize("command", ["status", "migrate", "resend", "purge"])
async def test_outbox_commands_refuse_a_damaged_file_and_leave_it_as_it_is(
    outbox_path: Path, run_connector: CliRunner, damage: Damage, command: str
) -> None:
    await damage(outbox_path)
    before = digests(outbox_path)
    result = await asyncio.to_thread(run_connector, command, env={"DATA_DIR": str(outbox_path.parent)})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {outbox_path} is ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert "`connector run` moves it aside" in result.stderr
    assert "`connector salvage <that file>` recovers its rows" in result.stderr
    assert unchanged(before, outbox_path)
    assert quarantined_files(outbox_path) == []
