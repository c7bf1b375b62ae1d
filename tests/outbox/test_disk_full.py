"""A full disk during ingest: rows wait in the writer's memory buffer and none is lost once space returns.

The database is made full with SQLite's `max_page_count` (portable: it answers SQLITE_FULL exactly
as a full disk does), set on the store's writer connection, which the limit belongs to. Where this
user may mount a small tmpfs, a real full file system is tested too.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from connector import metrics
from connector.ami.ingest import CdrWriter
from connector.outbox.records import Headers, Kind, State
from connector.outbox.retention import RetentionPass, RetentionSettings
from connector.outbox.store import Store
from tests.doubles.ami_server import synthetic_cdrs

pytestmark = pytest.mark.timeout(120)


def frames(count: int, start: int = 0) -> list[Headers]:
    """Cdr events as the reader hands them to the writer."""
    found = []
    for frame in synthetic_cdrs(count, start):
        lines = frame.decode().removesuffix("\r\n\r\n").split("\r\n")
        found.append(tuple((line.split(": ", 1)[0], line.split(": ", 1)[1]) for line in lines))
    return found


def stored_uniqueids(path: Path) -> list[str]:
    with sqlite3.connect(path) as db:
        found = [row[0] for row in db.execute("SELECT uniqueid FROM cdr ORDER BY id")]
    db.close()
    return found


def expected_uniqueids(headers: list[Headers]) -> list[str]:
    return [dict(h)["UniqueID"] for h in headers]


async def limit_pages(store: Store, pages: int) -> int:
    """Cap the file at `pages` pages (SQLite keeps at least the current count); return the cap."""
    # The limit is a property of one connection: the writer's is the store's own.
    cursor = await store._db.execute(f"PRAGMA max_page_count={pages}")
    (limit,) = await cursor.fetchone()
    return int(limit)


async def until(check: object, what: str, timeout_s: float = 30) -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not check():  # type: ignore[operator]
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


@pytest.fixture
async def writer(store: Store) -> AsyncIterator[CdrWriter]:
    running = CdrWriter(store, retry_initial_s=0.01, retry_max_s=0.05)
    task = asyncio.create_task(running.run())
    try:
        yield running
    finally:
        running.stop(timeout_s=1)
        await asyncio.wait_for(task, 30)


async def test_a_full_database_during_ingest_loses_nothing_once_space_returns(
    store: Store, writer: CdrWriter
) -> None:
    before = frames(200)
    for headers in before:
        writer.on_cdr(headers)
    await writer.wait_for_rows(200)
    space = await store.space()
    await limit_pages(store, space.page_count - space.freelist_count)  # not one page to spare

    during = frames(3000, start=200)
    for headers in during:
        writer.on_cdr(headers)
    await until(lambda: not writer.outbox_writable, "the writer to see the full database")
    assert metrics.REGISTRY.get_sample_value("outbox_writable") == 0
    assert len(stored_uniqueids(store.path)) < 3200  # the disk is full: rows wait in memory

    await limit_pages(store, 1_000_000)  # space returns
    await writer.wait_for_rows(3200)

    assert stored_uniqueids(store.path) == expected_uniqueids(before + during)
    assert writer.dropped == 0 and writer.buffered == 0 and writer.outbox_writable
    assert metrics.REGISTRY.get_sample_value("outbox_writable") == 1


async def test_the_retention_pass_makes_room_in_a_full_database(store: Store, writer: CdrWriter) -> None:
    delivered = frames(2000)
    for headers in delivered:
        writer.on_cdr(headers)
    await writer.wait_for_rows(2000)
    while due := await store.due_cdrs(500):
        await store.mark_sent(Kind.CDR, [row.id for row in due])
    space = await store.space()
    await limit_pages(store, space.page_count - space.freelist_count)
    waiting = frames(1000, start=2000)
    for headers in waiting:
        writer.on_cdr(headers)
    await until(lambda: not writer.outbox_writable, "the writer to see the full database")

    # Over the bound, the oldest sent rows go: their pages take the rows waiting in memory.
    bound = space.in_use_bytes // 2
    report = await RetentionPass(store, RetentionSettings(retention_s=1e9, max_bytes=bound)).run_once()
    assert report.for_bound[Kind.CDR] > 0
    await writer.wait_for_rows(3000)

    stats = await store.stats()
    assert stats.tables[Kind.CDR].counts[State.PENDING] == 1000
    assert stored_uniqueids(store.path)[-1000:] == expected_uniqueids(waiting)
    assert writer.dropped == 0


# -- a real full file system ---------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs of our own; skipped where this user may not mount one."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill_up(folder: Path) -> Path:
    """Write a ballast file until the file system is full; return it."""
    ballast = folder / "ballast"
    with ballast.open("wb") as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
            os.fsync(handle.fileno())
    # The last partial writes may leave a few bytes: take them too.
    with contextlib.suppress(OSError), ballast.open("ab") as handle:
        while True:
            handle.write(b"\0" * 512)
            handle.flush()
    return ballast


async def test_a_full_file_system_during_ingest_loses_nothing_once_space_returns(small_disk: Path) -> None:
    store = await Store.open(small_disk / "outbox.db")
    writer = CdrWriter(store, retry_initial_s=0.01, retry_max_s=0.05)
    task = asyncio.create_task(writer.run())
    try:
        before = frames(500)
        for headers in before:
            writer.on_cdr(headers)
        await writer.wait_for_rows(500)
        ballast = fill_up(small_disk)
        with pytest.raises(OSError) as full:
            (small_disk / "probe").write_bytes(b"x" * 4096)
        assert full.value.errno == errno.ENOSPC

        during = frames(5000, start=500)
        for headers in during:
            writer.on_cdr(headers)
        await until(lambda: not writer.outbox_writable, "the writer to see the full disk")

        ballast.unlink()  # space returns
        await writer.wait_for_rows(5500)
        assert stored_uniqueids(store.path) == expected_uniqueids(before + during)
        assert writer.dropped == 0 and writer.outbox_writable
    finally:
        writer.stop(timeout_s=1)
        await asyncio.wait_for(task, 30)
        await store.close()
