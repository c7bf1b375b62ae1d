"""The private servers themselves, through SQLAlchemy's asyncio drivers as the connector uses them."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.db.conftest import CdrDatabase
from tests.paths import REPO


async def _count(url: str) -> int:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(sa.text("SELECT COUNT(*) FROM cdr"))).scalar_one())
    finally:
        await engine.dispose()


async def test_the_reader_sees_the_cdr_table_and_may_not_write_it(cdr_db: CdrDatabase) -> None:
    assert await _count(cdr_db.url) == 0
    engine = create_async_engine(cdr_db.url)
    try:
        with pytest.raises(sa.exc.DBAPIError):
            async with engine.begin() as connection:
                await connection.execute(sa.text("DELETE FROM cdr"))
    finally:
        await engine.dispose()


async def test_a_wrong_password_is_refused(cdr_db: CdrDatabase) -> None:
    with pytest.raises(sa.exc.DBAPIError):
        await _count(cdr_db.wrong_password_url)


async def test_the_server_stops_and_comes_back(cdr_db: CdrDatabase) -> None:
    engine = create_async_engine(cdr_db.url)
    try:
        async with engine.connect() as held:  # an open connection must not hold the shutdown up
            await held.execute(sa.text("SELECT 1"))
            started = time.monotonic()
            cdr_db.server.stop()
            assert time.monotonic() - started < 10
            with pytest.raises(sa.exc.DBAPIError):
                await held.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError:
        pass  # closing the dead connection may fail too
    finally:
        await engine.dispose()
    with pytest.raises((sa.exc.DBAPIError, OSError)):
        await _count(cdr_db.url)
    cdr_db.server.start()
    assert await _count(cdr_db.url) == 0


async def test_rows_inserted_by_the_fixture_are_read_back_by_the_reader(cdr_db: CdrDatabase) -> None:
    when = dt.datetime(2026, 3, 1, 12, 30, 5)
    row: dict[str, object] = {"uniqueid": "1772368205.7", "clid": '"O\'Brien \\ Co" <1001>', "billsec": 42}
    row |= {"calldate": when} if cdr_db.schema == "freepbx" else {"start": when, "end": when}
    cdr_db.insert_rows([row, {**row, "uniqueid": "1772368205.8"}])
    engine = create_async_engine(cdr_db.url)
    try:
        async with engine.connect() as connection:
            query = sa.text("SELECT uniqueid, clid, billsec FROM cdr ORDER BY uniqueid")
            rows = (await connection.execute(query)).all()
    finally:
        await engine.dispose()
    assert [tuple(r) for r in rows] == [
        ("1772368205.7", '"O\'Brien \\ Co" <1001>', 42),
        ("1772368205.8", '"O\'Brien \\ Co" <1001>', 42),
    ]
    assert cdr_db.execute("SELECT COUNT(*) FROM cdr WHERE billsec = :s", {"s": 42}) == [("2",)]


def test_the_tables_have_the_columns_freepbx_and_asterisk_create(cdr_db: CdrDatabase) -> None:
    where = "table_schema" if cdr_db.schema == "freepbx" else "table_catalog"  # MariaDB: schema = database
    query = f"SELECT column_name FROM information_schema.columns WHERE {where} = :db AND table_name = 'cdr'"
    columns = {name for (name,) in cdr_db.execute(query, {"db": cdr_db.name})}
    common = {"src", "dst", "dcontext", "channel", "dstchannel", "disposition", "uniqueid", "linkedid"}
    assert common <= columns and "id" not in columns
    if cdr_db.schema == "freepbx":
        assert {"calldate", "did", "recordingfile", "cnum", "outbound_cnum", "sequence"} <= columns
    else:
        assert {"start", "answer", "end", "sequence"} <= columns and "calldate" not in columns


@pytest.mark.parametrize("kind", ["mariadb", "postgres"])
def test_a_killed_test_process_leaves_no_server_behind(kind: str) -> None:
    script = (
        "import sys, time; from tests.dbservers import start_mariadb, start_postgres; "
        f"server = start_{kind}(); print(server.process.pid, server.port, server.folder, flush=True); "
        "time.sleep(60)"
    )
    folder = ""
    with subprocess.Popen(
        [sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            pid, port, folder = child.stdout.readline().split()
            os.kill(child.pid, signal.SIGKILL)  # no atexit, no finalizer: only the kernel tells the server
            child.wait(10)
            deadline = time.monotonic() + 30
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(pid)
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", int(port)), timeout=1).close()
        finally:
            child.kill()
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: str) -> bool:
    # Without an init that reaps orphans (some containers), a dead server stays a zombie: dead enough.
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
