"""The CDR database as a gap-recovery source: its URL, its table's columns, and the reading queries.

Two tables are known by their columns, not by name: FreePBX's `asteriskcdrdb.cdr` (MariaDB, written
by cdr_adaptive_odbc: `calldate` = the start, `duration`, no answer or end column, no id, `calldate`
indexed) and Asterisk's own schema that cdr_pgsql fills (`start`, `answer`, `end`, no index). Any
table with `uniqueid`, a start (`calldate` or `start`) and `duration` works.

Rows are read by their END time, because a row is inserted when its CDR ends: a page holds the rows
that ended in [:lo, :hi), oldest end first (then by uniqueid), after the keyset (:after_end,
:after_uid) when one is given. With an `end` column the query filters on it (README gives the
index); without one the end is `calldate + duration`, and `calldate >= :lo - LONGEST_CALL` lets the
calldate index bound the scan: a call longer than LONGEST_CALL is not recovered from such a table.
This module is the only one that speaks SQL to the CDR database; the rows it returns are plain
mappings (connector.cdr.db_rows names them).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from connector.cdr.csv_rows import CDR_FIELD_HEADERS
from connector.cdr.identity import CANONICAL_FIELDS

LONGEST_CALL = timedelta(hours=24)
PAGE_ROWS = 5000
# A page never spans more than this much end time: each query then touches a bounded slice of the
# index, however much history a `start` read or a long downtime leaves to read.
WINDOW = timedelta(days=1)
CONNECT_TIMEOUT_S = 10
EXAMPLE_URLS = (
    "mysql+asyncmy://user:password@host/asteriskcdrdb or postgresql+asyncpg://user:password@host/asterisk"
)

# backend → (the asyncio drivers SQLAlchemy knows for it, the extra that installs ours)
_DRIVERS: dict[str, tuple[tuple[str, ...], str]] = {
    "mysql": (("asyncmy", "aiomysql"), "mysql"),
    "mariadb": (("asyncmy", "aiomysql"), "mysql"),
    "postgresql": (("asyncpg",), "postgres"),
}
_HEADER_COLUMN = {header: column for column, header in CDR_FIELD_HEADERS.items()}
# The columns a row's identity needs to equal its AMI event's (cdr_pgsql's full schema has them).
IDENTITY_COLUMNS = tuple(_HEADER_COLUMN[name] for name in CANONICAL_FIELDS)
_END_INDEX = re.compile(r"\(\s*\"?end\"?\s*[,)]", re.IGNORECASE)


def check_url(text: str) -> None:
    """Refuse a URL the connector cannot use, with the fix; the message never repeats the URL."""
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError(f"is not a database URL; use e.g. {EXAMPLE_URLS}") from None
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend not in _DRIVERS:
        raise ValueError(
            f"{backend!r} is not supported; use MariaDB/MySQL or PostgreSQL, e.g. {EXAMPLE_URLS}"
        )
    drivers, extra = _DRIVERS[backend]
    # Without `+driver` SQLAlchemy picks a blocking one (mysqldb, psycopg): name ours.
    if "+" not in url.drivername or driver not in drivers:
        raise ValueError(
            f"needs an asyncio driver: {backend}+{drivers[0]}://… (installed by the {extra} extra: "
            f"pip install '.[{extra}]')"
        )
    try:
        importlib.import_module(driver)
    except ImportError:
        raise ValueError(
            f"the {driver} driver is not installed: install the {extra} extra: pip install '.[{extra}]' "
            "(the Docker image has it)"
        ) from None
    if not url.database:
        raise ValueError("names no database; end it with the database, e.g. /asteriskcdrdb")


def shown_url(text: str) -> str:
    """The URL as logs and `check` print it: the password as ***."""
    return make_url(text).render_as_string(hide_password=True)


def source_key(text: str, table: str) -> str:
    """The key of the saved position: server, database and table (not the user or password)."""
    url: URL = make_url(text)
    port = f":{url.port}" if url.port else ""
    return f"{url.get_backend_name()}://{url.host or ''}{port}/{url.database}/{table}"


def open_engine(url: str) -> AsyncEngine:
    """An engine of one connection (a follower reads one page at a time); pre-ping notices a server
    that went away, so the next poll reconnects instead of failing on a dead connection."""
    backend = make_url(url).get_backend_name()
    timeout = "connect_timeout" if backend in ("mysql", "mariadb") else "timeout"
    return create_async_engine(
        url, pool_size=1, max_overflow=0, pool_pre_ping=True, connect_args={timeout: CONNECT_TIMEOUT_S}
    )


@dataclass(frozen=True)
class Layout:
    """What the table offers: its columns (lower case), its dialect, and whether times carry a zone."""

    table: str
    dialect: str  # "mysql" or "postgresql"
    columns: tuple[str, ...]
    zoned: bool = False  # timestamp with time zone: parameters are given as aware times

    @property
    def start(self) -> str:
        """The column of the start time."""
        return "start" if "start" in self.columns else "calldate"

    @property
    def has_end(self) -> bool:
        """The table has an end column (cdr_pgsql), so the end is read, not derived."""
        return "end" in self.columns

    @property
    def missing(self) -> list[str]:
        """The columns recovery needs that the table lacks."""
        have = set(self.columns)
        missing = [name for name in ("uniqueid", "duration") if name not in have]
        if not {"calldate", "start"} & have:
            missing.append("calldate or start")
        return missing

    @property
    def complete(self) -> bool:
        """Every field of the CDR identity is a column: a row's identity is its AMI event's."""
        return set(IDENTITY_COLUMNS) <= set(self.columns)


async def read_layout(connection: AsyncConnection, table: str) -> Layout:
    """The table's columns; sa.exc.NoSuchTableError when it does not exist."""
    schema, _, name = table.rpartition(".")

    def columns(sync: sa.Connection) -> list[tuple[str, bool]]:
        found = sa.inspect(sync).get_columns(name, schema=schema or None)
        return [(str(c["name"]).lower(), bool(getattr(c["type"], "timezone", False))) for c in found]

    found = await connection.run_sync(columns)
    if not found:
        raise sa.exc.NoSuchTableError(table)
    zoned = any(aware for column, aware in found if column in ("start", "end", "calldate"))
    return Layout(table, connection.dialect.name, tuple(column for column, _ in found), zoned)


def _quote(dialect: sa.Dialect, name: str) -> str:
    return ".".join(dialect.identifier_preparer.quote(part) for part in name.split("."))


def end_expression(layout: Layout, dialect: sa.Dialect) -> str:
    """The SQL of a row's end time."""
    q = dialect.identifier_preparer.quote
    if layout.has_end:
        return q("end")
    if layout.dialect == "postgresql":
        return f"({q(layout.start)} + {q('duration')} * INTERVAL '1 second')"
    return f"({q(layout.start)} + INTERVAL {q('duration')} SECOND)"


def page_query(layout: Layout, dialect: sa.Dialect, *, keyset: bool) -> sa.TextClause:
    """Rows that ended in [:lo, :hi), oldest end first then by uniqueid, at most :limit of them.

    With `keyset`, only rows after (:after_end, :after_uid) in that order (the next page). Without
    an end column, `start >= :earliest` (= :lo - LONGEST_CALL) and `start < :hi` bound the scan of
    the start index.
    """
    q = dialect.identifier_preparer.quote
    end, uid = end_expression(layout, dialect), q("uniqueid")
    where = [f"{end} >= :lo", f"{end} < :hi"]
    if not layout.has_end:
        where = [f"{q(layout.start)} >= :earliest", f"{q(layout.start)} < :hi", *where]
    if keyset:
        where.append(f"({end} > :after_end OR ({end} = :after_end AND {uid} > :after_uid))")
    columns = ", ".join(q(column) for column in layout.columns)
    order = f"{end}, {uid}" + (f", {q('sequence')}" if "sequence" in layout.columns else "")
    return sa.text(
        f"SELECT {columns} FROM {_quote(dialect, layout.table)} WHERE {' AND '.join(where)}"
        f" ORDER BY {order} LIMIT :limit"
    )


def _interval(layout: Layout) -> str:
    hours = int(LONGEST_CALL.total_seconds() // 3600)
    return f"INTERVAL '{hours} hours'" if layout.dialect == "postgresql" else f"INTERVAL {hours} HOUR"


def newest_query(layout: Layout, dialect: sa.Dialect, *, end: bool = False) -> sa.TextClause:
    """The newest end (with an end column: an index probe) or start in the table.

    `end` on a table without an end column: the newest calldate + duration among the calls that
    started at most LONGEST_CALL before the newest start (the start index bounds the scan).
    """
    q, table = dialect.identifier_preparer.quote, _quote(dialect, layout.table)
    if layout.has_end or not end:
        return sa.text(f"SELECT MAX({q('end' if layout.has_end else layout.start)}) FROM {table}")
    start = q(layout.start)
    return sa.text(
        f"SELECT MAX({end_expression(layout, dialect)}) FROM {table}"
        f" WHERE {start} >= (SELECT MAX({start}) FROM {table}) - {_interval(layout)}"
    )


def next_end_query(layout: Layout, dialect: sa.Dialect) -> sa.TextClause:
    """A lower bound of the ends at or after :lo: where the next window may start.

    With an end column, the next end itself. Without one, the earliest of the ends at or after :lo
    of the calls started in [:earliest, :lo), and the first start at or after :lo (a call ends no
    earlier than it starts): two scans of the start index, of at most LONGEST_CALL and one row.
    """
    q, table = dialect.identifier_preparer.quote, _quote(dialect, layout.table)
    if layout.has_end:
        return sa.text(f"SELECT MIN({q('end')}) FROM {table} WHERE {q('end')} >= :lo")
    start, end = q(layout.start), end_expression(layout, dialect)
    return sa.text(
        f"SELECT MIN(e) FROM (SELECT MIN({end}) AS e FROM {table}"
        f" WHERE {start} >= :earliest AND {start} < :lo AND {end} >= :lo"
        f" UNION ALL SELECT MIN({start}) AS e FROM {table} WHERE {start} >= :lo) AS bounds"
    )


def _bound(moment: datetime, layout: Layout, zone: tzinfo) -> datetime:
    # A timestamptz column compares instants: give it the PBX's local time as an aware time.
    return moment.replace(tzinfo=zone) if layout.zoned else moment


def page_params(
    layout: Layout,
    lo: datetime,
    hi: datetime,
    zone: tzinfo,
    after: tuple[datetime, str] | None = None,
    limit: int = PAGE_ROWS,
) -> dict[str, Any]:
    """The parameters of page_query (times are the PBX's naive local times)."""
    params: dict[str, Any] = {"lo": _bound(lo, layout, zone), "hi": _bound(hi, layout, zone), "limit": limit}
    if not layout.has_end:
        params["earliest"] = _bound(lo - LONGEST_CALL, layout, zone)
    if after is not None:
        params["after_end"], params["after_uid"] = _bound(after[0], layout, zone), after[1]
    return params


async def read_page(
    connection: AsyncConnection, layout: Layout, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """One page of rows, each a dict of its columns (lower-case names)."""
    query = page_query(layout, connection.dialect, keyset="after_end" in params)
    result = await connection.execute(query, dict(params))
    return [{str(name).lower(): value for name, value in row.items()} for row in result.mappings()]


async def newest(connection: AsyncConnection, layout: Layout, *, end: bool = False) -> Any:
    """The newest end (or start; with `end`, an end always) in the table; None when it is empty."""
    return (await connection.execute(newest_query(layout, connection.dialect, end=end))).scalar()


async def next_end(connection: AsyncConnection, layout: Layout, lo: datetime, zone: tzinfo) -> Any:
    """Where the next window of ends at or after `lo` may start; None when no row ends after it."""
    params = {"lo": _bound(lo, layout, zone), "earliest": _bound(lo - LONGEST_CALL, layout, zone)}
    query = next_end_query(layout, connection.dialect)
    return (await connection.execute(query, params if not layout.has_end else {"lo": params["lo"]})).scalar()


async def end_indexed(connection: AsyncConnection, layout: Layout) -> bool | None:
    """Whether an index of a PostgreSQL table starts with its end column; None when not PostgreSQL."""
    if layout.dialect != "postgresql" or not layout.has_end:
        return None
    schema, _, name = layout.table.rpartition(".")
    query = sa.text(
        "SELECT indexdef FROM pg_indexes WHERE tablename = :name"
        + (" AND schemaname = :schema" if schema else " AND schemaname = ANY (current_schemas(false))")
    )
    params = {"name": name, **({"schema": schema} if schema else {})}
    definitions: Sequence[str] = (await connection.execute(query, params)).scalars().all()
    return any(
        _END_INDEX.search(definition.partition(" USING ")[2] or definition) for definition in definitions
    )
