"""Real MariaDB and PostgreSQL servers (tests/dbservers.py): one of each per test session, a fresh
database with the `cdr` table per test."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.dbservers import DatabaseServer, create_database, start_mariadb, start_postgres

_numbers = itertools.count(1)


@dataclass
class CdrDatabase:
    """A database holding a `cdr` table: `url` is the read-only user's (CDR_BACKFILL_DB_URL).

    The reader has SELECT on `cdr` and nothing else (README's grant); `admin_url` may write. Rows
    go in through the server's own command-line client, so `execute` and `insert_rows` are plain
    blocking calls that never touch the test's event loop. `server.stop()` / `server.start()` take
    the whole server down and back up (same port, same data).
    """

    server: DatabaseServer
    name: str
    schema: str  # freepbx | pgsql

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    @property
    def wrong_password_url(self) -> str:
        return self.server.url(self.name, secret="not-the-secret")

    @property
    def admin_url(self) -> str:
        return self.server.admin_url(self.name)

    def sql(self, statements: str) -> str:
        """Run an SQL script (literal values, `;`-separated) as the superuser; return the client's output."""
        return self.server.sql(statements, self.name)

    def execute(self, statement: str, params: dict[str, Any] | None = None) -> list[tuple[str, ...]]:
        """Run one statement (`:name` parameters) as the superuser; rows as text, NULL as "NULL"."""
        return self.server.execute(statement, params, self.name)

    def insert_rows(self, rows: list[dict[str, Any]]) -> None:
        """Insert CDR rows (column -> value; omitted columns take their defaults) as the superuser."""
        self.server.insert_rows("cdr", rows, self.name)


def _server(start: object) -> Iterator[DatabaseServer]:
    server = start()  # type: ignore[operator]
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[DatabaseServer]:
    yield from _server(start_mariadb)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[DatabaseServer]:
    yield from _server(start_postgres)


def _database(server: DatabaseServer, schema: str) -> CdrDatabase:
    if not server.running:  # a test that stopped it and failed before starting it again
        server.start()
    database = CdrDatabase(server, f"cdr_test_{next(_numbers)}", schema)
    create_database(server, database.name, schema)
    return database


@pytest.fixture
def freepbx_db(mariadb_server: DatabaseServer) -> CdrDatabase:
    """FreePBX's asteriskcdrdb.cdr in MariaDB."""
    return _database(mariadb_server, "freepbx")


@pytest.fixture
def pgsql_db(postgres_server: DatabaseServer) -> CdrDatabase:
    """Asterisk's cdr table (cdr_pgsql) in PostgreSQL."""
    return _database(postgres_server, "pgsql")


@pytest.fixture(params=["freepbx", "pgsql"])
def cdr_db(request: pytest.FixtureRequest) -> CdrDatabase:
    """Each of the two, in turn."""
    name = "freepbx_db" if request.param == "freepbx" else "pgsql_db"
    return request.getfixturevalue(name)  # type: ignore[no-any-return]
