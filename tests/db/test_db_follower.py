"""The database follower against real MariaDB (FreePBX's table) and PostgreSQL (cdr_pgsql's)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from connector.ami.ingest import new_cdr
from connector.backfill.db_follower import DbFollower, describe_error
from connector.outbox.records import Headers
from connector.outbox.store import Store
from tests.cdr.helpers import paired_ami
from tests.db.conftest import CdrDatabase
from tests.db.rows import TIME, insert, shifted

FIXTURE_END = datetime(2026, 11, 27)  # after every CDR of the paired captures


def follower(store: Store, database: CdrDatabase, **options: object) -> DbFollower:
    options.setdefault("start", "start")
    options.setdefault("grace_s", 0.0)
    options.setdefault("zone_name", "UTC")
    return DbFollower(store, options.pop("url", database.url), "cdr", store.path, **options)  # type: ignore[arg-type]


def db_rows(outbox: Path, source: str = "db") -> list[tuple[str, str]]:
    with sqlite3.connect(outbox) as db:
        return list(db.execute("SELECT uniqueid, source FROM cdr WHERE source = ?", (source,)))


async def store_over_ami(store: Store, cdrs: list[Headers]) -> None:
    await store.append_cdrs([new_cdr(headers, time.time()) for headers in cdrs])


async def test_what_ami_missed_is_recovered_once_and_nothing_twice(store: Store, cdr_db: CdrDatabase) -> None:
    cdrs = paired_ami()
    missed = cdrs[10:25]  # AMI was down for these
    await store_over_ami(store, cdrs[:10] + cdrs[25:])
    insert(cdr_db, cdrs)

    reader = follower(store, cdr_db)
    try:
        assert await reader.run_once() == len(cdrs)
        assert (reader.recovered, reader.known) == (len(missed), len(cdrs) - len(missed))
        assert await reader.run_once() == 0 or reader.recovered == len(missed)  # margin re-read adds nothing
    finally:
        await reader.close()
    recovered = db_rows(store.path)
    assert sorted(uid for uid, _ in recovered) == sorted(dict(h)["UniqueID"] for h in missed)

    again = follower(store, cdr_db)  # a restart: the position is in the outbox
    try:
        await again.run_once()
        assert again.recovered == 0
    finally:
        await again.close()
    assert len(db_rows(store.path)) == len(missed)


async def test_a_restart_resumes_without_reading_the_table_again(store: Store, cdr_db: CdrDatabase) -> None:
    base = paired_ami()[0]
    # 50 days of history every 6 hours, before the capture's own time (the follower reads no future).
    days = [shifted(base, timedelta(hours=-6 * (210 - i)), f"1795000000.{i}") for i in range(200)]
    insert(cdr_db, days)
    first = follower(store, cdr_db)
    try:
        assert await first.run_once() == 200
        assert first.recovered == 200
    finally:
        await first.close()
    later = [shifted(base, timedelta(hours=i), f"1795000001.{i}") for i in range(5)]
    insert(cdr_db, later)
    second = follower(store, cdr_db)
    try:
        read = await second.run_once()
    finally:
        await second.close()
    assert second.recovered == 5
    assert read <= 6, "only the rows since the saved position (and its margin) are read"


async def test_a_long_call_written_after_later_short_ones_is_recovered(
    store: Store, cdr_db: CdrDatabase
) -> None:
    base = paired_ami()[0]
    now = datetime.now().replace(microsecond=0)
    short = [
        shifted(
            base, now - timedelta(minutes=50) - _start(base) + timedelta(seconds=2 * i), f"1796000000.{i}"
        )
        for i in range(1000)
    ]
    insert(cdr_db, short)
    reader = follower(store, cdr_db, zone_name="")
    try:
        assert await reader.run_once() == 1000
        ten_hours = _long_call(base, now - timedelta(hours=10, minutes=1), hours=10)
        insert(cdr_db, [ten_hours])  # written when it ended, a minute ago, after the thousand
        await reader.run_once()
    finally:
        await reader.close()
    assert reader.recovered == 1001
    assert "1796999999.1" in {uid for uid, _ in db_rows(store.path)}


async def test_the_database_stopping_and_coming_back(
    store: Store, cdr_db: CdrDatabase, caplog: pytest.LogCaptureFixture
) -> None:
    cdrs = paired_ami()
    reader = follower(store, cdr_db, poll_interval_s=0.1)
    task = asyncio.create_task(reader.run())
    try:
        cdr_db.server.stop()
        with caplog.at_level(logging.WARNING):
            await _until(lambda: "cannot read CDRs" in caplog.text)
        cdr_db.server.start()
        insert(cdr_db, cdrs[:5])
        await _until(lambda: reader.recovered == 5)
        assert "works again" in caplog.text
    finally:
        reader.stop()
        if not cdr_db.server.running:
            cdr_db.server.start()
        await asyncio.wait_for(task, 30)
    assert "secret" not in caplog.text


async def test_a_wrong_password_and_a_missing_table_are_one_clear_line(
    store: Store, cdr_db: CdrDatabase
) -> None:
    wrong = follower(store, cdr_db, url=cdr_db.wrong_password_url)
    try:
        with pytest.raises(Exception) as refused:
            await wrong.run_once()
    finally:
        await wrong.close()
    line = describe_error(refused.value, "cdr")
    assert "\n" not in line and "not-the-secret" not in line
    assert "denied" in line.lower() or "password" in line.lower()

    cdr_db.sql("DROP TABLE cdr;")
    missing = follower(store, cdr_db)
    try:
        with pytest.raises(Exception) as absent:
            await missing.run_once()
    finally:
        await missing.close()
    assert describe_error(absent.value, "cdr") == "table cdr does not exist (CDR_BACKFILL_DB_TABLE)"


def _start(headers: Headers) -> datetime:
    return datetime.strptime(dict(headers)["StartTime"], TIME)


def _long_call(base: Headers, start: datetime, hours: int) -> Headers:
    fields = dict(base)
    seconds = hours * 3600
    fields.update(
        StartTime=start.strftime(TIME),
        AnswerTime=start.strftime(TIME),
        EndTime=(start + timedelta(seconds=seconds)).strftime(TIME),
        Duration=str(seconds),
        BillableSeconds=str(seconds),
        UniqueID="1796999999.1",
    )
    return tuple(fields.items())


async def _until(condition: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_import_range_stores_only_that_range_and_moves_no_position(
    store: Store, cdr_db: CdrDatabase
) -> None:
    cdrs = paired_ami()
    insert(cdr_db, cdrs)
    ends = sorted(datetime.strptime(dict(h)["EndTime"], TIME) for h in cdrs)
    since, until = ends[10], ends[30]
    expected = {
        dict(h)["UniqueID"] for h in cdrs if since <= datetime.strptime(dict(h)["EndTime"], TIME) < until
    }
    pages: list[int] = []
    reader = follower(store, cdr_db, page_rows=5)
    try:
        await reader.import_range(since, until, pages.append)
    finally:
        await reader.close()
    assert {uid for uid, _ in db_rows(store.path)} == expected
    assert pages and pages[-1] == reader.rows_read
    assert await store.db_position(reader.key) is None  # the running follower's position is untouched
