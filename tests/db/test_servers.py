"""The private servers themselves, through SQLAlchemy's asyncio drivers as the connector uses them."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from tests.db.conftest import CdrDatabase


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
    cdr_db.server.stop()
    with pytest.raises((sa.exc.DBAPIError, OSError)):
        await _count(cdr_db.url)
    cdr_db.server.start()
    assert await _count(cdr_db.url) == 0
