"""The outbox store: the only module that issues SQL against the outbox at run time.

One aiosqlite connection per store (aiosqlite runs it on its own thread), plus one for statistics.
Every state change is one statement, atomic on its own (autocommit), guarded by the row's current
state, so only the transitions of `State` can ever happen; appends are one `BEGIN IMMEDIATE`
transaction per batch.
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
from connector.outbox.numbering import number_cdrs
from connector.outbox.records import (
    CdrRow,
    CsvPosition,
    Kind,
    NewCdr,
    NewRecording,
    RecordingRow,
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

# Rows already stored under the identities of a batch, found through the dedupe_key index: every
# key of an identity lies between 'identity#' and 'identity$' ('$' sorts right after '#').
KNOWN_IDENTITIES_SQL = """
SELECT c.dedupe_key, c.fingerprint
  FROM json_each(?) AS j
  JOIN cdr AS c ON c.dedupe_key >= j.value || '#' AND c.dedupe_key < j.value || '$'
"""

INSERT_CDR_SQL = """
INSERT INTO cdr (received_at, dedupe_key, identity, fingerprint, source, uniqueid, linkedid, raw,
                 state, attempts, next_attempt_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, ?1, ?1)
ON CONFLICT (dedupe_key) DO NOTHING
"""

# An AMI frame whose CDR was read from Master.csv first adopts that row: the row learns the frame's
# fingerprint (so a later ForkCDR twin gets the next number), counts as received over AMI rather
# than recovered, and, unless already sent, carries the frame's headers.
ADOPT_CDR_SQL = """
UPDATE cdr SET fingerprint = ?4, source = ?5, linkedid = coalesce(linkedid, ?7),
               raw = CASE WHEN state = 'pending' THEN ?8 ELSE raw END
 WHERE dedupe_key = ?2 AND fingerprint IS NULL
"""

APPEND_RECORDING_SQL = """
INSERT OR IGNORE INTO recording (path, size, mtime, sha256, detected_at, uniqueid, linkedid,
                                 state, attempts, next_attempt_at, updated_at)
VALUES (:path, :size, :mtime, :sha256, :detected_at, :uniqueid, :linkedid,
        'pending', 0, :detected_at, :detected_at)
"""

SAVE_POSITION_SQL = """
INSERT INTO csv_position (path, inode, offset, line, updated_at)
VALUES (:path, :inode, :offset, :line, :now)
ON CONFLICT (path) DO UPDATE SET inode = excluded.inode, offset = excluded.offset,
                                 line = excluded.line, updated_at = excluded.updated_at
"""

TIME_COLUMN = {Kind.CDR: "received_at", Kind.RECORDING: "detected_at"}
# The partial index holds pending rows only, so it stays small and cached however many sent rows
# pile up; naming it keeps the planner from ever scanning the table instead.
PENDING_INDEX = {Kind.CDR: "INDEXED BY ix_cdr_pending", Kind.RECORDING: "INDEXED BY ix_recording_pending"}
T = TypeVar("T")


def _position_params(position: CsvPosition) -> dict[str, Any]:
    return {
        "path": position.path,
        "inode": position.inode,
        "offset": position.offset,
        "line": position.line,
        "now": utc_now(),
    }


def _ids_json(ids: Sequence[int]) -> str:
    return json.dumps([int(i) for i in ids])


class Store:
    """The outbox: append, claim, settle, resend, purge, stats."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._write_lock = asyncio.Lock()
        self._stats_db: aiosqlite.Connection | None = None

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
        # Counting a large table takes a while: a connection of its own keeps appends and claims
        # from queueing behind it (WAL gives it a consistent snapshot of committed rows).
        try:
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

    async def _statement(self, sql: str, params: Any) -> list[Any]:
        """Run one write statement as its own transaction; return the rows it returns.

        A single statement in autocommit mode is atomic by itself, so it needs no BEGIN and
        COMMIT: one trip to SQLite's thread instead of four, which is what bounds how fast a busy
        drainer can claim and settle rows.
        """
        async with self._write_lock:
            try:
                return list(await self._db.execute_fetchall(sql, params))
            except sqlite3.Error as error:
                raise OutboxError(f"outbox write failed: {error}") from error

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

    async def append_cdrs(self, rows: Sequence[NewCdr], position: CsvPosition | None = None) -> int:
        """Store CDRs in one transaction (group commit); return how many were new.

        With `position`, the CSV reader's position is saved in the same transaction as the rows.
        """
        if not rows and position is None:
            return 0
        identities = json.dumps(sorted({row.identity for row in rows}))

        async def work() -> int:
            cursor = await self._db.execute(KNOWN_IDENTITIES_SQL, (identities,))
            known = [(str(key), fingerprint) for key, fingerprint in await cursor.fetchall()]
            numbered = number_cdrs(rows, known)
            await self._db.executemany(INSERT_CDR_SQL, numbered.inserts)
            if numbered.adoptions:
                await self._db.executemany(ADOPT_CDR_SQL, numbered.adoptions)
            if position is not None:
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

    async def _claim(self, kind: Kind, columns: str, limit: int, lease_s: float) -> list[Any]:
        # Claiming pushes next_attempt_at past a lease, so a second claim cannot take the same
        # rows while a send is in flight; a crash simply lets the lease expire.
        sql = (
            f"UPDATE {kind.value} SET next_attempt_at = :lease WHERE id IN ("
            f" SELECT id FROM {kind.value} {PENDING_INDEX[kind]}"
            " WHERE state = 'pending' AND next_attempt_at <= :now"
            f" ORDER BY id LIMIT :limit) RETURNING {columns}"
        )
        params = {"lease": utc_in(lease_s), "now": utc_now(), "limit": limit}
        return sorted(await self._statement(sql, params), key=lambda row: row[0])

    async def claim_cdrs(self, limit: int, lease_s: float = 120.0) -> list[CdrRow]:
        """Claim due pending CDRs, oldest first."""
        rows = await self._claim(Kind.CDR, CDR_COLUMNS, limit, lease_s)
        return [cdr_from_row(row) for row in rows]

    async def claim_recordings(self, limit: int, lease_s: float = 600.0) -> list[RecordingRow]:
        """Claim due pending recordings, oldest first."""
        rows = await self._claim(Kind.RECORDING, RECORDING_COLUMNS, limit, lease_s)
        return [recording_from_row(row) for row in rows]

    async def mark_sent(self, kind: Kind, ids: Sequence[int]) -> int:
        """Mark pending rows delivered."""
        if not ids:
            return 0
        now = utc_now()
        sql = (
            f"UPDATE {kind.value} SET state = 'sent', sent_at = :now, updated_at = :now,"
            " last_error = NULL"
            " WHERE state = 'pending' AND id IN (SELECT value FROM json_each(:ids))"
        )
        (changed,) = await self._transaction([(sql, {"now": now, "ids": _ids_json(ids)})])
        return changed

    async def mark_recording_sent(self, row_id: int, sha256: str) -> int:
        """Mark a pending recording delivered and keep the sha256 of the bytes it was sent with."""
        sql = (
            "UPDATE recording SET state = 'sent', sha256 = :sha256, sent_at = :now, updated_at = :now,"
            " last_error = NULL WHERE state = 'pending' AND id = :id"
        )
        (changed,) = await self._transaction([(sql, {"sha256": sha256, "now": utc_now(), "id": row_id})])
        return changed

    async def mark_filtered(self, kind: Kind, reasons: Mapping[int, str]) -> int:
        """Mark pending rows filtered, each with the reason."""
        sql = (
            f"UPDATE {kind.value} SET state = 'filtered', filter_reason = :reason,"
            " updated_at = :now WHERE state = 'pending' AND id = :id"
        )
        now = utc_now()
        params = [{"id": i, "reason": reason, "now": now} for i, reason in reasons.items()]
        if not params:
            return 0
        (changed,) = await self._transaction([(sql, params)])
        return changed

    async def mark_failed(self, kind: Kind, errors: Mapping[int, str]) -> int:
        """Mark pending rows failed, each with the API's answer."""
        sql = (
            f"UPDATE {kind.value} SET state = 'failed', attempts = attempts + 1,"
            " last_error = :error, updated_at = :now WHERE state = 'pending' AND id = :id"
        )
        now = utc_now()
        params = [{"id": i, "error": error, "now": now} for i, error in errors.items()]
        if not params:
            return 0
        (changed,) = await self._transaction([(sql, params)])
        return changed

    async def reschedule(self, kind: Kind, ids: Sequence[int], delay_s: float, error: str) -> int:
        """Keep rows pending, count the attempt, and make them due again after delay_s."""
        if not ids:
            return 0
        sql = (
            f"UPDATE {kind.value} SET attempts = attempts + 1, next_attempt_at = :due,"
            " last_error = :error, updated_at = :now"
            " WHERE state = 'pending' AND id IN (SELECT value FROM json_each(:ids))"
        )
        params = {"due": utc_in(delay_s), "error": error, "now": utc_now(), "ids": _ids_json(ids)}
        (changed,) = await self._transaction([(sql, params)])
        return changed

    async def release(self, kind: Kind, ids: Sequence[int]) -> int:
        """Make claimed rows due at once again, without counting an attempt (e.g. on shutdown)."""
        if not ids:
            return 0
        sql = (
            f"UPDATE {kind.value} SET next_attempt_at = :now"
            " WHERE state = 'pending' AND id IN (SELECT value FROM json_each(:ids))"
        )
        (changed,) = await self._transaction([(sql, {"now": utc_now(), "ids": _ids_json(ids)})])
        return changed

    async def defer(self, kind: Kind, ids: Sequence[int], delay_s: float) -> int:
        """Make pending rows due again after delay_s, without counting an attempt (e.g. a wait)."""
        if not ids:
            return 0
        sql = (
            f"UPDATE {kind.value} SET next_attempt_at = :due"
            " WHERE state = 'pending' AND id IN (SELECT value FROM json_each(:ids))"
        )
        (changed,) = await self._transaction([(sql, {"due": utc_in(delay_s), "ids": _ids_json(ids)})])
        return changed

    async def release_all(self, kind: Kind) -> int:
        """Make every pending row due now: at start-up no claim of a previous run is still live."""
        sql = (
            f"UPDATE {kind.value} SET next_attempt_at = :now"
            " WHERE state = 'pending' AND next_attempt_at > :now"
        )
        (changed,) = await self._transaction([(sql, {"now": utc_now()})])
        return changed

    async def due_summary(
        self, kind: Kind, limit: int, exclude: Collection[int] = ()
    ) -> tuple[int, str | None]:
        """How many pending rows are due (counting at most `limit`), and when the oldest arrived."""
        rows = await self._read(
            f"SELECT count(*), min({TIME_COLUMN[kind]}) FROM (SELECT {TIME_COLUMN[kind]} FROM {kind.value}"
            f" {PENDING_INDEX[kind]} WHERE state = 'pending' AND next_attempt_at <= ?"
            " AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?)",
            (utc_now(), _ids_json(list(exclude)), limit),
        )
        count, oldest = rows[0]
        return int(count), oldest

    async def due_cdrs(self, limit: int, exclude: Collection[int] = ()) -> list[CdrRow]:
        """Due pending CDRs, oldest first, leaving out `exclude` (the caller's rows in flight).

        Unlike claim_cdrs this writes nothing: the one `connector run` that may own the outbox
        keeps its rows in flight in memory, and a crash leaves nothing to expire.
        """
        rows = await self._read(
            f"SELECT {CDR_COLUMNS} FROM cdr {PENDING_INDEX[Kind.CDR]}"
            " WHERE state = 'pending' AND next_attempt_at <= ?"
            " AND id NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?",
            (utc_now(), _ids_json(list(exclude)), limit),
        )
        return [cdr_from_row(row) for row in rows]

    async def resend(
        self,
        kinds: Sequence[Kind] = (Kind.CDR, Kind.RECORDING),
        ids: Sequence[int] = (),
        since: str | None = None,
    ) -> int:
        """Move failed rows back to pending, due now; return how many moved."""
        conditions = ["state = 'failed'"]
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
                f"UPDATE {kind.value} SET state = 'pending', next_attempt_at = :now,"
                f" updated_at = :now WHERE {where}",
                params,
            )
            for kind in kinds
        ]
        return sum(await self._transaction(statements))

    async def purge(self, older_than_s: float) -> int:
        """Delete sent and filtered rows settled more than older_than_s ago; return how many."""
        cutoff = utc_in(-older_than_s)
        statements = [
            (
                f"DELETE FROM {kind.value} WHERE state IN ('sent', 'filtered') AND updated_at < :cutoff",
                {"cutoff": cutoff},
            )
            for kind in Kind
        ]
        return sum(await self._transaction(statements))

    async def csv_position(self, path: str) -> CsvPosition | None:
        """Where the CSV follower of `path` stopped, if it ever read it."""
        rows = await self._read("SELECT path, inode, offset, line FROM csv_position WHERE path = ?", (path,))
        return CsvPosition(*rows[0]) if rows else None

    async def cdrs_by_uniqueid(self, uniqueid: str) -> list[CdrRow]:
        """Every stored CDR of a channel, oldest first."""
        rows = await self._read(f"SELECT {CDR_COLUMNS} FROM cdr WHERE uniqueid = ? ORDER BY id", (uniqueid,))
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
            f"SELECT {CDR_COLUMNS} FROM cdr WHERE id IN"
            " (SELECT id FROM cdr WHERE substr(uniqueid, ?) = ?) ORDER BY id",
            (-len(suffix), suffix),
        )
        return [cdr_from_row(row) for row in found]

    async def get_cdrs(self, ids: Sequence[int]) -> list[CdrRow]:
        """The CDR rows with these ids, oldest first."""
        rows = await self._read(
            f"SELECT {CDR_COLUMNS} FROM cdr WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (_ids_json(ids),),
        )
        return [cdr_from_row(row) for row in rows]

    async def get_recordings(self, ids: Sequence[int]) -> list[RecordingRow]:
        """The recording rows with these ids, oldest first."""
        rows = await self._read(
            f"SELECT {RECORDING_COLUMNS} FROM recording"
            " WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (_ids_json(ids),),
        )
        return [recording_from_row(row) for row in rows]

    async def mark_deleted(self, ids: Sequence[int]) -> int:
        """Note that recording files were deleted after upload."""
        sql = "UPDATE recording SET deleted_at = :now WHERE id IN (SELECT value FROM json_each(:ids))"
        (changed,) = await self._transaction([(sql, {"now": utc_now(), "ids": _ids_json(ids)})])
        return changed

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
                f"SELECT {TIME_COLUMN[kind]} FROM {kind.value} {PENDING_INDEX[kind]}"
                " WHERE state = 'pending' ORDER BY id LIMIT 1"
            )
            oldest = oldest_rows[0][0] if oldest_rows else None
            tables[kind] = TableStats(counts=counts, oldest_pending_at=oldest)
        failures = [
            FailedRow(Kind(kind), row_id, attempts, error, failed_at)
            for row_id, kind, attempts, error, failed_at in await self._stats_read(
                "SELECT id, kind, attempts, last_error, failed_at FROM failed"
                " ORDER BY failed_at DESC, id DESC LIMIT ?",
                (recent_failures,),
            )
        ]
        return OutboxStats(tables=tables, recent_failures=failures)
