"""A damaged or quarantined outbox file, read row by row around the pages that cannot be read.

The file is opened through quarantine.connect_read_only, so no byte of it, its -wal or its -shm
changes (SQLite only creates an empty -wal/-shm beside a file that has none, which reading a WAL
database requires). A copy would protect nothing more, and would need the file's size free again
on the disk that may be why the file got damaged.

Each table is read in id order, READ_ROWS rows per statement while its pages are sound; where a
statement meets a page it cannot read, the ids from there are read one at a time, each with its own
statement, until reads work again. An id whose read fails is unreadable; so is a CDR whose headers
cannot be read (a CDR is never imported without them), and a row whose values make no sense. For
the CDRs of schema 0003 an id that neither table holds is not a CDR. The last id comes from
sqlite_sequence or max(id) (of the table, or of cdr_raw), and when those pages cannot be read
either, from probing. Both layouts are read: schema 0003 (headers in cdr_raw, a JSON object) and
0001/0002 (in cdr.raw, a JSON array of [name, value] pairs, converted as migration 0003 does).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from connector.cdr.raw import Headers, headers_of_raw, raw_json
from connector.errors import UserError
from connector.outbox.names import CDR_RAW_TABLE, CDR_TABLE, CSV_POSITION_TABLE, RECORDING_TABLE
from connector.outbox.quarantine import SQLITE_MAGIC, connect_read_only
from connector.outbox.records import (
    CsvPosition,
    Delivery,
    NewCdr,
    NewRecording,
    SalvagedCdr,
    SalvagedRecording,
    State,
)

# Rows per read statement while the pages are sound (one id per statement around a damaged page).
READ_ROWS = 200
README_SECTION = 'README, "Salvaging a damaged outbox"'

Row = tuple[Any, ...]
T = TypeVar("T")

_DELIVERY = "state, attempts, next_attempt_at, last_error, filter_reason, sent_at, updated_at"
_CDR_COLUMNS = f"id, received_at, dedupe_key, identity, fingerprint, source, uniqueid, linkedid, {_DELIVERY}"
_RECORDING_COLUMNS = (
    f"id, path, size, mtime, sha256, detected_at, uniqueid, linkedid, {_DELIVERY}, deleted_at"
)
_POSITION_COLUMNS = "rowid, path, inode, offset, line"


class Miss(Enum):
    """Why reading one id gave no row."""

    ABSENT = "no row has this id"
    UNREADABLE = "the page that holds this id cannot be read"


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, found {value!r}")
    return value


def _optional(value: Any) -> str | None:
    return None if value is None else _text(value)


def _integer(value: Any) -> int:
    if not isinstance(value, int):
        raise TypeError(f"expected an integer, found {value!r}")
    return value


def _delivery(values: Sequence[Any]) -> Delivery:
    state, attempts, next_attempt_at, last_error, filter_reason, sent_at, updated_at = values
    return Delivery(
        state=State(state),
        attempts=_integer(attempts),
        next_attempt_at=_text(next_attempt_at),
        last_error=_optional(last_error),
        filter_reason=_optional(filter_reason),
        sent_at=_optional(sent_at),
        updated_at=_text(updated_at),
    )


def headers_of_object(text: str) -> tuple[Headers, str]:
    """Schema 0003: the headers of a raw JSON object, and the stored text itself."""
    raw = json.loads(text)
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, str) for v in raw.values()):
        raise ValueError("raw is not an object of header values")
    return headers_of_raw(raw), text


def headers_of_pairs(text: str) -> tuple[Headers, str]:
    """Schema 0001/0002: the headers of a JSON array of [name, value] pairs, and their raw object."""
    pairs = json.loads(text)
    if not isinstance(pairs, list) or not pairs:
        raise ValueError("raw is not an array of headers")
    headers = tuple((_text(name), _text(value)) for name, value in pairs)
    return headers, raw_json(headers)


def _cdr(row: Row, decode: Callable[[str], tuple[Headers, str]]) -> SalvagedCdr:
    """A SalvagedCdr from a row of _CDR_COLUMNS plus raw; ValueError/TypeError if it makes no sense."""
    _, received_at, key, identity, fingerprint, source, uniqueid, linkedid = row[:8]
    prefix, _, number = _text(key).rpartition("#")
    if prefix != _text(identity) or not number.isdigit() or int(number) < 1:
        raise ValueError(f"dedupe_key {key!r} does not belong to identity {identity!r}")
    headers, stored = decode(_text(row[15]))
    cdr = NewCdr(
        headers=headers,
        received_at=_text(received_at),
        identity=identity,
        fingerprint=_optional(fingerprint),
        uniqueid=_text(uniqueid),
        linkedid=_optional(linkedid),
        source=_text(source),
        occurrence=int(number),
        raw_json=stored,
    )
    return SalvagedCdr(cdr, _delivery(row[8:15]))


def _recording(row: Row) -> SalvagedRecording:
    _, path, size, mtime, sha256, detected_at, uniqueid, linkedid = row[:8]
    if not isinstance(mtime, int | float):
        raise TypeError(f"mtime {mtime!r} is not a number")
    recording = NewRecording(
        path=_text(path),
        size=_integer(size),
        mtime=float(mtime),
        detected_at=_text(detected_at),
        uniqueid=_optional(uniqueid),
        linkedid=_optional(linkedid),
        sha256=_optional(sha256),
    )
    return SalvagedRecording(recording, _delivery(row[8:15]), _optional(row[15]))


def _position(row: Row) -> CsvPosition:
    _, path, inode, offset, line = row
    return CsvPosition(_text(path), _integer(inode), _integer(offset), _integer(line))


def _one(connection: sqlite3.Connection, sql: str, row_id: int) -> Row | Miss:
    """The row of one id, read on its own."""
    try:
        row = connection.execute(sql, (row_id,)).fetchone()
    except sqlite3.DatabaseError:
        return Miss.UNREADABLE
    return Miss.ABSENT if row is None else tuple(row)


def _run(connection: sqlite3.Connection, sql: str, start: int) -> tuple[list[Row], bool]:
    """Up to READ_ROWS rows from id `start` on; whether the read ended without meeting damage."""
    rows: list[Row] = []
    try:
        for row in connection.execute(sql, (start, READ_ROWS)):
            # A damaged page can hand out ids out of order: stop there, as at an unreadable page.
            if not isinstance(row[0], int) or row[0] < (rows[-1][0] + 1 if rows else start):
                return rows, False
            rows.append(tuple(row))
    except sqlite3.DatabaseError:
        return rows, False
    return rows, True


def walk(
    connection: sqlite3.Connection, run_sql: str, one: Callable[[int], Row | Miss], last_id: int
) -> Iterator[tuple[int, Row | None]]:
    """Every row of a table in id order; (id, None) for an id that cannot be read."""
    next_id = 1
    while True:
        rows, sound = _run(connection, run_sql, next_id)
        for row in rows:
            yield row[0], row
        if rows:
            next_id = rows[-1][0] + 1
        if sound:
            if len(rows) < READ_ROWS:
                return
            continue
        if next_id > last_id:
            return
        found = one(next_id)
        if found is not Miss.ABSENT:
            yield next_id, None if found is Miss.UNREADABLE else found
        next_id += 1


def _scalar(connection: sqlite3.Connection, sql: str, *params: Any) -> int | None:
    try:
        row = connection.execute(sql, params).fetchone()
    except sqlite3.DatabaseError:
        return None
    value = row[0] if row else None
    return value if isinstance(value, int) else None


def probe_last_id(connection: sqlite3.Connection, table: str) -> int:
    """A bound on the ids of `table` when neither sqlite_sequence nor max(id) can be read.

    The first power of two with no row at or above it (read cleanly: the pages on the way are sound);
    a probe that meets damage goes on to the next. If none answers, the highest id any probe found.
    """
    sql = f"SELECT rowid FROM {table} WHERE rowid >= ? ORDER BY rowid LIMIT 1"
    found, bound = 0, 1
    while bound < 2**62:
        try:
            row = connection.execute(sql, (bound,)).fetchone()
        except sqlite3.DatabaseError:
            row = (bound,)  # cannot tell: look further
        if row is None:
            return bound
        found = max(found, int(row[0]))
        bound = max(bound, int(row[0])) * 2
    return found


class DamagedOutbox:
    """A damaged or quarantined outbox, read row by row through a connection that writes nothing.

    Use it from one thread: the one that opened it (sqlite3's rule for a connection).
    """

    def __init__(self, path: Path, connection: sqlite3.Connection, tables: dict[str, set[str]]) -> None:
        self.path = path
        self._db = connection
        self._tables = tables
        # Schema 0003 keeps the headers in cdr_raw (a JSON object); before it, in cdr.raw (pairs).
        self.raw_apart = CDR_RAW_TABLE in tables
        if self.raw_apart:
            columns = ", ".join(f"c.{name}" for name in _CDR_COLUMNS.split(", "))
            self._cdr_select = (
                f"SELECT {columns}, r.raw FROM {CDR_TABLE} AS c"
                f" LEFT JOIN {CDR_RAW_TABLE} AS r ON r.id = c.id WHERE c.id"
            )
            self._cdr_order = "c.id"
        else:
            self._cdr_select = f"SELECT {_CDR_COLUMNS}, raw FROM {CDR_TABLE} WHERE id"
            self._cdr_order = "id"

    @classmethod
    def open(cls, path: Path) -> DamagedOutbox:
        """Open `path` read-only and read its schema; UserError (one line) if it is no outbox."""
        _check_header(path)
        try:
            connection = connect_read_only(path)
        except sqlite3.Error as error:
            raise UserError(f"cannot open {path} ({error}): check the path and its permissions") from None
        try:
            tables = _schema(connection, path)
        except BaseException:
            connection.close()
            raise
        return cls(path, connection, tables)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def last_id(self, table: str, *siblings: str) -> int:
        """The highest id `table` may hold (sqlite_sequence, max(id) of it or of its siblings, probing)."""
        candidates = [_scalar(self._db, "SELECT seq FROM sqlite_sequence WHERE name = ?", table)]
        candidates += [_scalar(self._db, f"SELECT max(rowid) FROM {name}") for name in (table, *siblings)]
        known = [value for value in candidates if value is not None]
        return max(known) if known else probe_last_id(self._db, table)

    def last_cdr_id(self) -> int:
        """The highest id the cdr table may hold (its raw rows share the ids)."""
        return self.last_id(CDR_TABLE, *((CDR_RAW_TABLE,) if self.raw_apart else ()))

    def last_recording_id(self) -> int:
        """The highest id the recording table may hold."""
        return self.last_id(RECORDING_TABLE)

    def cdrs(self, last_id: int) -> Iterator[tuple[int, SalvagedCdr | None]]:
        """Every CDR by id, up to `last_id` where pages are damaged; None for one that cannot be read."""
        decode = headers_of_object if self.raw_apart else headers_of_pairs
        run_sql = f"{self._cdr_select} >= ? ORDER BY {self._cdr_order} LIMIT ?"
        for row_id, row in walk(self._db, run_sql, self._one_cdr, last_id):
            yield row_id, _converted(row, lambda found: _cdr(found, decode))

    def recordings(self, last_id: int) -> Iterator[tuple[int, SalvagedRecording | None]]:
        """Every recording row by id, as `cdrs`; None for one that cannot be read."""
        for row_id, row in self._rows(RECORDING_TABLE, _RECORDING_COLUMNS, "id", last_id):
            yield row_id, _converted(row, _recording)

    def positions(self) -> list[CsvPosition]:
        """The CSV follower's positions that can be read (schema 0002 on; not counted)."""
        if CSV_POSITION_TABLE not in self._tables:
            return []
        rows = self._rows(CSV_POSITION_TABLE, _POSITION_COLUMNS, "rowid", self.last_id(CSV_POSITION_TABLE))
        positions = [_converted(row, _position) for _, row in rows]
        return [position for position in positions if position is not None]

    def _rows(self, table: str, columns: str, key: str, last_id: int) -> Iterator[tuple[int, Row | None]]:
        one_sql = f"SELECT {columns} FROM {table} WHERE {key} = ?"
        run_sql = f"SELECT {columns} FROM {table} WHERE {key} >= ? ORDER BY {key} LIMIT ?"
        return walk(self._db, run_sql, lambda row_id: _one(self._db, one_sql, row_id), last_id)

    def _one_cdr(self, row_id: int) -> Row | Miss:
        """One CDR with its headers; for schema 0003 ABSENT when neither table holds the id."""
        found = _one(self._db, f"{self._cdr_select} = ?", row_id)
        if found is not Miss.UNREADABLE or not self.raw_apart:
            return found
        cdr = _one(self._db, f"SELECT id FROM {CDR_TABLE} WHERE id = ?", row_id)
        raw = _one(self._db, f"SELECT id FROM {CDR_RAW_TABLE} WHERE id = ?", row_id)
        # The trigger deletes a cdr's raw row with it: an id neither holds was purged (or never used).
        if cdr is Miss.ABSENT or (cdr is Miss.UNREADABLE and raw is Miss.ABSENT):
            return Miss.ABSENT
        return Miss.UNREADABLE


def _converted(row: Row | None, convert: Callable[[Row], T]) -> T | None:
    """The record of a row read; None when it was unreadable or its values make no sense."""
    if row is None:
        return None
    try:
        return convert(row)
    except (ValueError, TypeError):
        return None  # garbage from a damaged page that SQLite could still parse


def _check_header(path: Path) -> None:
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_MAGIC))
    except OSError as error:
        raise UserError(
            f"cannot read {path} ({error.strerror}): check the path and its permissions"
        ) from None
    if not header:
        raise UserError(f"{path} is empty: there is nothing to salvage in it")
    if header != SQLITE_MAGIC:
        raise UserError(f"{path} is not a SQLite database: give the path of a damaged or quarantined outbox")


_CDR_NEEDS = set(_CDR_COLUMNS.split(", "))
_RECORDING_NEEDS = set(_RECORDING_COLUMNS.split(", "))


def _schema(connection: sqlite3.Connection, path: Path) -> dict[str, set[str]]:
    """The file's tables and their columns; UserError unless it is an outbox this connector reads."""
    try:
        names = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        tables = {
            name: {row[1] for row in connection.execute(f"PRAGMA table_info('{name}')")} for name in names
        }
    except sqlite3.DatabaseError as error:
        raise UserError(
            f"{path}: its schema cannot be read ({error}), so no row of it can be found; with gap "
            f"recovery configured, `connector backfill` recovers its CDRs ({README_SECTION})"
        ) from None
    cdr, recording = tables.get(CDR_TABLE, set()), tables.get(RECORDING_TABLE, set())
    raw_ok = CDR_RAW_TABLE in tables or "raw" in cdr
    if not (_CDR_NEEDS <= cdr and _RECORDING_NEEDS <= recording and raw_ok):
        held = ", ".join(sorted(tables)) or "none"
        raise UserError(
            f"{path} is not a connector outbox (its tables: {held}): give the path of a damaged or "
            "quarantined outbox, e.g. DATA_DIR/outbox.db.corrupt-<time>"
        )
    return tables
