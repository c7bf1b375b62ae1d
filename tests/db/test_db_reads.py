"""The database follower's reads against real servers: pages never split or skip rows, a long call
ended late is read, history with empty stretches is crossed, zoned times become local text."""

from __future__ import annotations

import itertools
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connector.backfill.db_follower import DbFollower
from connector.outbox.records import Headers
from connector.outbox.store import Store
from tests.cdr.helpers import paired_ami
from tests.db.conftest import CdrDatabase
from tests.db.rows import TIME, insert

BASE = paired_ami()[0]
_sequences = itertools.count(1000)


def now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


def cdr(uniqueid: str, end: datetime, seconds: int = 30) -> Headers:
    """The first fixture CDR, moved to end at `end` after `seconds`, under another UniqueID."""
    fields = dict(BASE)
    start = end - timedelta(seconds=seconds)
    fields.update(
        UniqueID=uniqueid,
        StartTime=start.strftime(TIME),
        AnswerTime=start.strftime(TIME),
        EndTime=end.strftime(TIME),
        Duration=str(seconds),
        BillableSeconds=str(seconds),
        Sequence=str(next(_sequences)),  # Asterisk numbers every CDR
    )
    return tuple(fields.items())


def follower(store: Store, database: CdrDatabase, **options: object) -> DbFollower:
    options.setdefault("start", "start")
    options.setdefault("grace_s", 0.0)
    options.setdefault("zone_name", "UTC")
    return DbFollower(store, database.url, "cdr", store.path, **options)  # type: ignore[arg-type]


def stored(outbox: Path) -> list[str]:
    with sqlite3.connect(outbox) as db:
        return [uid for (uid,) in db.execute("SELECT uniqueid FROM cdr WHERE source = 'db' ORDER BY id")]


async def test_small_pages_never_split_identical_rows_nor_skip_one(store: Store, cdr_db: CdrDatabase) -> None:
    end = now() - timedelta(hours=2)
    # UniqueIDs sort as text ("….10" before "….9") and share end seconds: groups straddle the pages.
    cdrs = [cdr(f"1797000000.{i // 3}", end + timedelta(seconds=i // 4)) for i in range(60)]
    twins = [cdrs[5], cdrs[5], cdrs[5]]  # ForkCDR twins: identical rows
    insert(cdr_db, cdrs + twins)
    reader = follower(store, cdr_db, page_rows=4)
    try:
        assert await reader.run_once() == len(cdrs) + len(twins)
        assert reader.recovered == len(cdrs) + len(twins)
        await reader.run_once()
        assert reader.recovered == len(cdrs) + len(twins)
    finally:
        await reader.close()
    assert len(stored(store.path)) == len(cdrs) + len(twins)


async def test_a_ten_hour_call_written_after_a_thousand_later_short_ones(
    store: Store, cdr_db: CdrDatabase
) -> None:
    start = now() - timedelta(minutes=50)
    short = [cdr(f"1797100000.{i}", start + timedelta(seconds=2 * i), 20) for i in range(1000)]
    insert(cdr_db, short)
    reader = follower(store, cdr_db, page_rows=300)
    try:
        assert await reader.run_once() == 1000
        insert(cdr_db, [cdr("1797199999.1", now() - timedelta(minutes=1), 10 * 3600)])
        await reader.run_once()
        assert reader.recovered == 1001
    finally:
        await reader.close()
    assert "1797199999.1" in stored(store.path)


async def test_history_with_empty_stretches_is_read_from_the_start(store: Store, cdr_db: CdrDatabase) -> None:
    old = [cdr(f"1797200000.{i}", now() - timedelta(days=400 - i)) for i in range(3)]
    recent = [cdr(f"1797300000.{i}", now() - timedelta(days=2, minutes=i)) for i in range(3)]
    insert(cdr_db, old + recent)
    reader = follower(store, cdr_db)
    try:
        assert await reader.run_once() == 6
    finally:
        await reader.close()
    assert sorted(stored(store.path)) == sorted(dict(h)["UniqueID"] for h in old + recent)


async def test_end_starts_after_the_newest_row_at_the_first_start(store: Store, cdr_db: CdrDatabase) -> None:
    insert(cdr_db, [cdr("1797400000.1", now() - timedelta(hours=1))])
    reader = follower(store, cdr_db, start="end")
    try:
        assert (await reader.run_once(), reader.recovered) == (0, 0)
        insert(cdr_db, [cdr("1797400000.2", now() - timedelta(minutes=1))])
        await reader.run_once()
        assert reader.recovered == 1
    finally:
        await reader.close()
    assert stored(store.path) == ["1797400000.2"]


async def test_zoned_timestamps_become_the_pbx_local_time(store: Store, pgsql_db: CdrDatabase) -> None:
    pgsql_db.sql(
        f"ALTER DATABASE {pgsql_db.name} SET timezone TO 'UTC';"
        " ALTER TABLE cdr ALTER COLUMN start TYPE timestamptz, ALTER COLUMN answer TYPE timestamptz,"
        ' ALTER COLUMN "end" TYPE timestamptz;'
    )
    end = now() - timedelta(hours=1)
    insert(pgsql_db, [cdr("1797500000.1", end)])  # written as UTC (the server's zone here)
    reader = follower(store, pgsql_db, zone_name="Asia/Kolkata")
    try:
        assert await reader.run_once() == 1
    finally:
        await reader.close()
    with sqlite3.connect(store.path) as db:
        (raw,) = db.execute("SELECT raw FROM cdr_raw").fetchone()
    local = (end + timedelta(hours=5, minutes=30)).strftime(TIME)
    assert json.loads(raw)["EndTime"] == local
