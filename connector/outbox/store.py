"""The outbox store: the only module that issues SQL against the outbox at run time.

One aiosqlite connection per store (aiosqlite runs it on its own thread), plus one for statistics.
Every state change is one statement, atomic on its own (autocommit), guarded by the row's current
state, so only the transitions of `State` can ever happen; appends are one `BEGIN IMMEDIATE`
transaction per batch. Taking rows for delivery writes nothing: the one `connector run` that may
own the outbox (DATA_DIR lock) keeps its rows in flight in memory and reads due rows without them,
so a crash leaves nothing to expire and a restart keeps every row's next_attempt_at. Storage names
come from connector.outbox.names, the append and due-read statements from outbox.statements.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from connector.errors import OutboxError
from connector.outbox.migrate import prepare_database
from connector.outbox.names import (
    CDR_TABLE,
    CDR_WITH_RAW,
    CSV_POSITION_TABLE,
    DB_POSITION_TABLE,
    FAILED,
    FAILED_VIEW,
    FILTERED,
    PENDING,
    PENDING_INDEX,
    RAW_JOIN,
    RECORDING_TABLE,
    SENT,
)
from connector.outbox.numbering import NumberedCdrs, number_cdrs
from connector.outbox.records import (
    CdrRow,
    CsvPosition,
    DbPosition,
    Delivery,
    Kind,
    NewCdr,
    NewRecording,
    RecordingRow,
    SalvagedCdr,
    SalvagedRecording,
    State,
)
from connector.outbox.rows import (
    CDR_COLUMNS,
    RECORDING_COLUMNS,
    FailedRow,
    OutboxStats,
    TableStats,
    cdr_from_row,
    recording_from_row,
)
from connector.outbox.space import SpaceFigures
from connector.outbox.statements import (
    ADOPT_CDR_RAW_SQL,
    ADOPT_CDR_SQL,
    APPEND_RECORDING_SQL,
    CDRS_BY_RECORDING_FILE_SQL,
    INSERT_CDR_RAW_SQL,
    INSERT_CDR_SQL,
    INSERT_SALVAGED_CDR_SQL,
    INSERT_SALVAGED_RECORDING_SQL,
    KEEP_POSITION_SQL,
    KNOWN_IDENTITIES_SQL,
    NEXT_CDR_ID_SQL,
    SAVE_DB_POSITION_SQL,
    SAVE_POSITION_SQL,
    SETTLED_CHUNK_ROWS,
    SPACE_SQL,
    TIME_COLUMN,
    delete_settled_sql,
    due_sql,
    oldest_settled_sql,
)
from connector.timeutil import utc_in, utc_now

BUSY_TIMEOUT_MS = 5000

# Durability settings, applied to every connection:
# - WAL lets `connector status` read while `connector run` writes;
# - synchronous=FULL fsyncs the WAL at every commit, so a committed row survives power loss,
#   not only a process crash (NORMAL would keep it only across crashes);
# - busy_timeout makes a concurrent CLI write wait instead of failing at once.
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}",
)

T = TypeVar("T")


def _position_params(position: CsvPosition) -> dict[str, Any]:
    return {
        "path": position.path,
        "inode": position.inode,
        "offset": position.offset,
        "line": position.line,
        "now": utc_now(),
    }


def _delivery_params(delivery: Delivery, now: str) -> tuple[Any, ...]:
    """A salvaged row's delivery columns in INSERT_SALVAGED_CDR_SQL's order; pending is due `now`."""
    due = now if delivery.state is State.PENDING else delivery.next_attempt_at
    return (
        delivery.state.value,
        delivery.attempts,
        due,
        delivery.last_error,
        delivery.filter_reason,
        delivery.sent_at,
        delivery.updated_at,
    )


def _salvaged_recording_params(row: SalvagedRecording, now: str) -> dict[str, Any]:
    recording, delivery = row.recording, row.delivery
    state, attempts, due, last_error, filter_reason, sent_at, updated_at = _delivery_params(delivery, now)
    return {
        "path": recording.path,
        "size": recording.size,
        "mtime": recording.mtime,
        "sha256": recording.sha256,
        "detected_at": recording.detected_at,
        "uniqueid": recording.uniqueid,
        "linkedid": recording.linkedid,
        "state": state,
        "attempts": attempts,
        "next_attempt_at": due,
        "last_error": last_error,
        "filter_reason": filter_reason,
        "sent_at": sent_at,
        "deleted_at": row.deleted_at,
        "updated_at": updated_at,
    }


def _ids_json(ids: Collection[int]) -> str:
    return json.dumps([int(i) for i in ids])


def _due_params(limit: int, exclude: Collection[int]) -> dict[str, Any]:
    return {"now": utc_now(), "exclude": _ids_json(exclude), "limit": limit}


class Store:
    """The outbox: append, read due rows, settle, resend, purge, stats."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._write_lock = asyncio.Lock()
        self._stats_db: aiosqlite.Connection | None = None
        self._stats_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> Store:
        """Check and migrate the outbox file, then open it with the durability PRAGMAs."""
        await asyncio.to_thread(prepare_database, path)
        try:
            connection = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as error:
            raise OutboxError(f"cannot open {path}: {error}") from None
        try:
            for pragma in PRAGMAS:
                await connection.execute(pragma)
        except sqlite3.Error as error:
            await connection.close()
            raise OutboxError(f"cannot use {path}: {error}") from None
        return cls(connection, path)

    async def close(self) -> None:
        """Close the connections (the WAL is checkpointed by SQLite on last close)."""
        if self._stats_db is not None:
            await self._stats_db.close()
        await self._db.close()

    async def _stats_read(self, sql: str, params: Any = ()) -> list[Any]:
        # Counting a large table takes a while: a connection of its own keeps appends and due reads
        # from queueing behind it (WAL gives it a consistent snapshot of committed rows).
        try:
            # Opened once, under a lock: two first readers (the stats refresh and the stats log
            # start together) would each open one, and the loser's thread would leak.
            async with self._stats_lock:
                if self._stats_db is None:
                    self._stats_db = await aiosqlite.connect(self.path, isolation_level=None)
                    await self._stats_db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            cursor = await self._stats_db.execute(sql, params)
            return list(await cursor.fetchall())
        except sqlite3.Error as error:
            raise OutboxError(f"outbox read failed: {error}") from error

    async def _write(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run `work` inside one BEGIN IMMEDIATE … COMMIT; any SQLite error is an OutboxError."""
        async with self._write_lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                result = await work()
                await self._db.execute("COMMIT")
            except sqlite3.Error as error:
                await self._rollback()
                raise OutboxError(f"outbox write failed: {error}") from error
            except BaseException:
                await self._rollback()
                raise
        return result

    async def _transaction(self, statements: Sequence[tuple[str, Any]]) -> list[int]:
        """Run statements in one write transaction; return each one's changed-row count."""
        if len(statements) == 1 and not isinstance(statements[0][1], list):
            sql, params = statements[0]
            return [await self._changes(sql, params)]

        async def work() -> list[int]:
            changed = []
            for sql, params in statements:
                if isinstance(params, list):
                    cursor = await self._db.executemany(sql, params)
                else:
                    cursor = await self._db.execute(sql, params)
                changed.append(cursor.rowcount)
            return changed

        return await self._write(work)

    async def _changes(self, sql: str, params: Any) -> int:
        """Run one write statement as its own transaction; return how many rows it changed."""
        async with self._write_lock:
            try:
                cursor = await self._db.execute(sql, params)
            except sqlite3.Error as error:
                raise OutboxError(f"outbox write failed: {error}") from error
            return int(cursor.rowcount)

    async def _rollback(self) -> None:
        try:
            if self._db.in_transaction:
                await self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the connection rolls back by itself when the transaction cannot continue

    async def _read(self, sql: str, params: Any = ()) -> list[Any]:
        # The connection is shared: a read must not run between the steps of an open write
        # transaction, or it would see rows that are not committed yet.
        async with self._write_lock:
            try:
                return list(await self._db.execute_fetchall(sql, params))
            except sqlite3.Error as error:
                raise OutboxError(f"outbox read failed: {error}") from error

    async def _number(self, rows: Sequence[NewCdr]) -> NumberedCdrs:
        """Number rows against the CDRs stored under their identities (inside a write transaction)."""
        identities = json.dumps(sorted({row.identity for row in rows}))
        cursor = await self._db.execute(KNOWN_IDENTITIES_SQL, (identities,))
        known = [(str(key), fingerprint) for key, fingerprint in await cursor.fetchall()]
        return number_cdrs(rows, known)

    async def _insert_numbered(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert CDRs under the next ids: `sql` takes the id, then a row but its last item (the raw)."""
        if not rows:
            return
        cursor = await self._db.execute(NEXT_CDR_ID_SQL)
        (first_id,) = await cursor.fetchone() or (1,)
        ids = range(first_id, first_id + len(rows))
        await self._db.executemany(sql, [(i, *row[:-1]) for i, row in zip(ids, rows, strict=True)])
        await self._db.executemany(
            INSERT_CDR_RAW_SQL, [(i, row[-1]) for i, row in zip(ids, rows, strict=True)]
        )

    async def _adopt(self, adoptions: Sequence[tuple[Any, ...]]) -> None:
        """Let rows read from a CSV take on the AMI frames numbered onto their keys."""
        if not adoptions:
            return
        params = [
            {"key": r[1], "fingerprint": r[3], "source": r[4], "linkedid": r[6], "raw": r[7]}
            for r in adoptions
        ]
        await self._db.executemany(ADOPT_CDR_RAW_SQL, params)
        await self._db.executemany(ADOPT_CDR_SQL, params)

    async def append_cdrs(
        self, rows: Sequence[NewCdr], position: CsvPosition | DbPosition | None = None
    ) -> int:
        """Store CDRs in one transaction (group commit); return how many were new.

        With `position`, the CSV reader's (or the CDR database follower's) position is saved in the
        same transaction as the rows.
        """
        if not rows and position is None:
            return 0

        async def work() -> int:
            numbered = await self._number(rows)
            await self._insert_numbered(INSERT_CDR_SQL, numbered.inserts)
            await self._adopt(numbered.adoptions)
            if isinstance(position, DbPosition):
                params = {"source": position.source, "position": position.position, "now": utc_now()}
                await self._db.execute(SAVE_DB_POSITION_SQL, params)
            elif position is not None:
                await self._db.execute(SAVE_POSITION_SQL, _position_params(position))
            return len(numbered.inserts)

        return await self._write(work)

    async def append_recordings(self, rows: Sequence[NewRecording]) -> int:
        """Store detected recordings in one transaction; return how many were new."""
        if not rows:
            return 0
        params = [
            {
                "path": r.path,
                "size": r.size,
                "mtime": r.mtime,
                "sha256": r.sha256,
                "detected_at": r.detected_at,
                "uniqueid": r.uniqueid,
                "linkedid": r.linkedid,
            }
            for r in rows
        ]
        (changed,) = await self._transaction([(APPEND_RECORDING_SQL, params)])
        return changed

    async def mark_sent(self, kind: Kind, ids: Sequence[int]) -> int:
        """Mark pending rows delivered."""
        if not ids:
            return 0
        now = utc_now()
        sql = (
            f"UPDATE {kind.value} SET state = {SENT}, sent_at = :now, updated_at = :now,"
            " last_error = NULL"
            f" WHERE state = {PENDING} AND id IN (SELECT value FROM json_each(:ids))"
        )
        (changed,) = await self._transaction([(sql, {"now": now, "ids": _ids_json(ids)})])
        return changed

    async def mark_recording_sent(self, row_id: int, sha256: str) -> int:
        """Mark a pending recording delivered and keep the sha256 of the bytes it was sent with."""
        sql = (
            f"UPDATE {RECORDING_TABLE} SET state = {SENT}, sha256 = :sha256, sent_at = :now,"
            f" updated_at = :now, last_error = NULL WHERE state = {PENDING} AND id = :id"
        )
        (changed,) = await self._transaction([(sql, {"sha256": sha256, "now": utc_now(), "id": row_id})])
        return changed

    async def _settle_each(self, kind: Kind, assignments: str, texts: Mapping[int, str]) -> int:
        """Settle pending rows one text each (`:text` in `assignments`), in one transaction."""
        if not texts:
            return 0
        sql = f"UPDATE {kind.value} SET {assignments}, updated_at = :now WHERE state = {PENDING} AND id = :id"
        now = utc_now()
        params = [{"id": i, "text": text, "now": now} for i, text in texts.items()]
        (changed,) = await self._transaction([(sql, params)])
        return changed

    async def mark_filtered(self, kind: Kind, reasons: Mapping[int, str]) -> int:
        """Mark pending rows filtered, each with the reason."""
        return await self._settle_each(kind, f"state = {FILTERED}, filter_reason = :text", reasons)

    async def mark_failed(self, kind: Kind, errors: Mapping[int, str]) -> int:
        """Mark pending rows failed, each with the API's answer."""
        return await self._settle_each(
            kind, f"state = {FAILED}, attempts = attempts + 1, last_error = :text", errors
        )

    async def reschedule(self, kind: Kind, ids: Sequence[int], delay_s: float, error: str) -> int:
        """Keep rows pending, count the attempt, and make them due again after delay_s."""
        if not ids:
            return 0
        sql = (
            f"UPDATE {kind.value} SET attempts = attempts + 1, next_attempt_at = :due,"
            " last_error = :error, updated_at = :now"
            f" WHERE state = {PENDING} AND id IN (SELECT value FROM json_each(:ids))"
        )
        params = {"due": utc_in(delay_s), "error": error, "now": utc_now(), "ids": _ids_json(ids)}
        (changed,) = await self._transaction([(sql, params)])
        return changed

    async def defer(self, kind: Kind, ids: Sequence[int], delay_s: float) -> int:
        """Make pending rows due again after delay_s, without counting an attempt (e.g. a wait)."""
        if not ids:
            return 0
        sql = (
            f"UPDATE {kind.value} SET next_attempt_at = :due"
            f" WHERE state = {PENDING} AND id IN (SELECT value FROM json_each(:ids))"
        )
        (changed,) = await self._transaction([(sql, {"due": utc_in(delay_s), "ids": _ids_json(ids)})])
        return changed

    async def due_summary(
        self, kind: Kind, limit: int, exclude: Collection[int] = ()
    ) -> tuple[int, str | None]:
        """How many pending rows are due (counting at most `limit`), and when the oldest arrived."""
        due = due_sql(kind, TIME_COLUMN[kind])
        rows = await self._read(
            f"SELECT count(*), min({TIME_COLUMN[kind]}) FROM ({due})", _due_params(limit, exclude)
        )
        count, oldest = rows[0]
        return int(count), oldest

    async def due_cdrs(self, limit: int, exclude: Collection[int] = ()) -> list[CdrRow]:
        """Due pending CDRs, oldest first, leaving out `exclude` (the caller's rows in flight)."""
        rows = await self._read(due_sql(Kind.CDR, CDR_COLUMNS, RAW_JOIN), _due_params(limit, exclude))
        return [cdr_from_row(row) for row in rows]

    async def due_recordings(self, limit: int, exclude: Collection[int] = ()) -> list[RecordingRow]:
        """Due pending recordings, oldest first, leaving out `exclude` (the caller's rows in flight)."""
        rows = await self._read(due_sql(Kind.RECORDING, RECORDING_COLUMNS), _due_params(limit, exclude))
        return [recording_from_row(row) for row in rows]

    async def resend(
        self,
        kinds: Sequence[Kind] = (Kind.CDR, Kind.RECORDING),
        ids: Sequence[int] = (),
        since: str | None = None,
    ) -> int:
        """Move failed rows back to pending, due now; return how many moved."""
        conditions = [f"state = {FAILED}"]
        params: dict[str, Any] = {"now": utc_now()}
        if ids:
            conditions.append("id IN (SELECT value FROM json_each(:ids))")
            params["ids"] = _ids_json(ids)
        if since:
            conditions.append("updated_at >= :since")
            params["since"] = since
        where = " AND ".join(conditions)
        statements = [
            (
                f"UPDATE {kind.value} SET state = {PENDING}, next_attempt_at = :now,"
                f" updated_at = :now WHERE {where}",
                params,
            )
            for kind in kinds
        ]
        return sum(await self._transaction(statements))

    async def purge(self, older_than_s: float) -> int:
        """Delete sent and filtered rows settled more than older_than_s ago; return how many."""
        cutoff = utc_in(-older_than_s)
        removed = 0
        for kind in Kind:
            while True:
                chunk = await self.delete_settled(kind, SETTLED_CHUNK_ROWS, cutoff)
                removed += chunk
                if chunk < SETTLED_CHUNK_ROWS:
                    break
        return removed

    async def csv_position(self, path: str) -> CsvPosition | None:
        """Where the CSV follower of `path` stopped, if it ever read it."""
        rows = await self._read(
            f"SELECT path, inode, offset, line FROM {CSV_POSITION_TABLE} WHERE path = ?", (path,)
        )
        return CsvPosition(*rows[0]) if rows else None

    async def db_position(self, source: str) -> DbPosition | None:
        """Where the CDR database follower of `source` reads from next, if it ever read it."""
        rows = await self._read(
            f"SELECT source, position FROM {DB_POSITION_TABLE} WHERE source = ?", (source,)
        )
        return DbPosition(*rows[0]) if rows else None

    async def cdrs_by_uniqueid(self, uniqueid: str) -> list[CdrRow]:
        """Every stored CDR of a channel, oldest first."""
        rows = await self._read(
            f"SELECT {CDR_COLUMNS} FROM {CDR_WITH_RAW} WHERE uniqueid = ? ORDER BY id", (uniqueid,)
        )
        return [cdr_from_row(row) for row in rows]

    async def cdrs_of_channel(self, uniqueid: str) -> list[CdrRow]:
        """Every stored CDR of a channel, oldest first, its UniqueID with or without a `systemname-`."""
        rows = await self.cdrs_by_uniqueid(uniqueid)
        if rows:
            return rows
        # With `systemname` set, Asterisk writes `pbx1-1795735443.50`; a suffix cannot use the index,
        # so this scans the (small, covering) uniqueid index, and only when the exact match failed.
        suffix = "-" + uniqueid
        found = await self._read(
            f"SELECT {CDR_COLUMNS} FROM {CDR_WITH_RAW} WHERE id IN"
            f" (SELECT id FROM {CDR_TABLE} WHERE substr(uniqueid, ?) = ?) ORDER BY id",
            (-len(suffix), suffix),
        )
        return [cdr_from_row(row) for row in found]

    async def cdrs_by_recording_file(self, names: Sequence[str]) -> list[CdrRow]:
        """Every stored CDR whose RecordingFile header is one of `names`, oldest first."""
        rows = await self._read(CDRS_BY_RECORDING_FILE_SQL, (json.dumps(list(names), ensure_ascii=False),))
        return [cdr_from_row(row) for row in rows]

    async def get_cdrs(self, ids: Sequence[int]) -> list[CdrRow]:
        """The CDR rows with these ids, oldest first."""
        rows = await self._read(
            f"SELECT {CDR_COLUMNS} FROM {CDR_WITH_RAW} WHERE id IN (SELECT value FROM json_each(?))"
            " ORDER BY id",
            (_ids_json(ids),),
        )
        return [cdr_from_row(row) for row in rows]

    async def get_recordings(self, ids: Sequence[int]) -> list[RecordingRow]:
        """The recording rows with these ids, oldest first."""
        rows = await self._read(
            f"SELECT {RECORDING_COLUMNS} FROM {RECORDING_TABLE}"
            " WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (_ids_json(ids),),
        )
        return [recording_from_row(row) for row in rows]

    async def mark_deleted(self, ids: Sequence[int]) -> int:
        """Note that recording files were deleted after upload."""
        sql = (
            f"UPDATE {RECORDING_TABLE} SET deleted_at = :now WHERE id IN (SELECT value FROM json_each(:ids))"
        )
        (changed,) = await self._transaction([(sql, {"now": utc_now(), "ids": _ids_json(ids)})])
        return changed

    async def import_salvaged(
        self,
        cdrs: Sequence[SalvagedCdr] = (),
        recordings: Sequence[SalvagedRecording] = (),
        positions: Sequence[CsvPosition] = (),
    ) -> tuple[int, int]:
        """Store rows read from another outbox in one transaction; return (imported, already present).

        Each row keeps its state (a pending one is due at once) and gets an id of this outbox. CDRs
        are numbered like appended ones (number_cdrs: a frame already stored under its identity is
        present whatever its number); a recording is present when its path, size and mtime are; a
        CSV position is kept only for a file that has none here. Positions are not counted.
        """
        now = utc_now()

        async def work() -> int:
            imported = 0
            if cdrs:
                numbered = await self._number([row.cdr for row in cdrs])
                inserts = [
                    (*params[:-1], *_delivery_params(cdrs[origin].delivery, now), params[-1])
                    for params, origin in zip(numbered.inserts, numbered.origins, strict=True)
                ]
                await self._insert_numbered(INSERT_SALVAGED_CDR_SQL, inserts)
                await self._adopt(numbered.adoptions)
                imported += len(inserts)
            if recordings:
                cursor = await self._db.executemany(
                    INSERT_SALVAGED_RECORDING_SQL, [_salvaged_recording_params(r, now) for r in recordings]
                )
                imported += cursor.rowcount
            if positions:
                params = [_position_params(position) for position in positions]
                await self._db.executemany(KEEP_POSITION_SQL, params)
            return imported

        imported = await self._write(work)
        return imported, len(cdrs) + len(recordings) - imported

    async def stats(self, recent_failures: int = 5) -> OutboxStats:
        """Counts per table and state, oldest pending rows, and the latest failures."""
        tables: dict[Kind, TableStats] = {}
        for kind in Kind:
            counts = {state: 0 for state in State}
            for state, count in await self._stats_read(
                f"SELECT state, count(*) FROM {kind.value} GROUP BY state"
            ):
                counts[State(state)] = count
            # Ids grow with arrival time, so the partial pending index finds the oldest at once.
            oldest_rows = await self._stats_read(
                f"SELECT {TIME_COLUMN[kind]} FROM {kind.value} INDEXED BY {PENDING_INDEX[kind]}"
                f" WHERE state = {PENDING} ORDER BY id LIMIT 1"
            )
            oldest = oldest_rows[0][0] if oldest_rows else None
            tables[kind] = TableStats(counts=counts, oldest_pending_at=oldest)
        failures = [
            FailedRow(Kind(kind), row_id, attempts, error, failed_at)
            for row_id, kind, attempts, error, failed_at in await self._stats_read(
                f"SELECT id, kind, attempts, last_error, failed_at FROM {FAILED_VIEW}"
                " ORDER BY failed_at DESC, id DESC LIMIT ?",
                (recent_failures,),
            )
        ]
        return OutboxStats(tables=tables, recent_failures=failures)

    async def delete_settled(self, kind: Kind, limit: int, settled_before: str | None = None) -> int:
        """Delete up to `limit` sent/filtered rows, oldest settled first; return how many.

        With `settled_before` (ISO time), only rows settled before it. One chunk is one transaction.
        """
        params: dict[str, Any] = {"limit": limit}
        if settled_before is not None:
            params["cutoff"] = settled_before
        return await self._changes(delete_settled_sql(kind, settled_before is not None), params)

    async def oldest_settled(self) -> dict[Kind, str | None]:
        """When each table's oldest sent/filtered row was settled (None: the table has none)."""
        oldest: dict[Kind, str | None] = {}
        for kind in Kind:
            rows = await self._read(oldest_settled_sql(kind))
            oldest[kind] = rows[0][0] if rows else None
        return oldest

    async def space(self) -> SpaceFigures:
        """The outbox file's page figures and its WAL's size."""
        ((page_count, freelist_count, page_size),) = await self._read(SPACE_SQL)
        try:
            wal_bytes = self.path.with_name(self.path.name + "-wal").stat().st_size
        except FileNotFoundError:
            wal_bytes = 0
        return SpaceFigures(page_size, page_count, freelist_count, wal_bytes)

    async def give_back_pages(self, pages: int) -> int:
        """Return up to `pages` free pages to the file system (one incremental vacuum step); how many.

        0 when there is nothing free, or when the file was made without incremental vacuum.
        """
        async with self._write_lock:
            try:
                ((before,),) = await self._db.execute_fetchall("PRAGMA page_count")
                # `execute` would run one step of the pragma, freeing one page: a script runs it
                # whole, as its own transaction (none is open: the write lock is held).
                await self._db.executescript(f"PRAGMA incremental_vacuum({int(pages)})")
                ((after,),) = await self._db.execute_fetchall("PRAGMA page_count")
            except sqlite3.Error as error:
                raise OutboxError(f"outbox write failed: {error}") from error
        return int(before) - int(after)

    async def checkpoint(self) -> None:
        """Copy the WAL into the database file, so that a file shorter after vacuum shrinks on disk.

        PASSIVE, on the statistics connection: it never makes a writer wait.
        """
        await self._stats_read("PRAGMA wal_checkpoint(PASSIVE)")
