"""`DbFollower`: the task of `connector run` that recovers from the CDR database what AMI missed.

Every CDR_BACKFILL_DB_POLL seconds it reads, page by page, the rows that ended since its position
(connector.backfill.database builds the queries, connector.backfill.db_cursor moves the position),
leaves out those the outbox already has, and stores the others (source `db`) with the new position
in one transaction, as the Master.csv follower does.

Recognising a row (README, "Gap recovery from the CDR database"): first by its dedupe key (a row
of cdr_pgsql's full schema has its AMI event's identity; any row read before has its own key);
then, for a row whose key is stored nowhere, by the records stored under its UniqueID, whatever
their source: `same_cdr` (twins.py) decides, on the Sequence when both carry one, else on every
identity field the row has read (never a derived EndTime or AnswerTime).

A database that is down, refuses the login, or lacks the table is a WARNING, retried with the one
backoff (connector.backoff); it never stops `run`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from connector.backfill.database import (
    PAGE_ROWS,
    WINDOW,
    Layout,
    end_indexed,
    newest,
    next_end,
    open_engine,
    page_params,
    read_layout,
    read_page,
    shown_url,
    source_key,
)
from connector.backfill.db_cursor import (
    DbCursor,
    Sorted,
    first_position,
    parse_position,
    position_text,
)
from connector.backfill.follower import BackfillStore
from connector.backfill.lines import cutoff_text
from connector.backfill.twins import AmiTwins, same_cdr
from connector.backoff import backoff_delay
from connector.cdr.db_rows import DbRecord, db_record, local_time
from connector.cdr.identity import first_wins
from connector.cdr.times import resolve_zone
from connector.errors import OutboxError, SourceError
from connector.metrics import BACKFILL_DB_ERRORS, BACKFILL_DB_LAG, CDRS_RECOVERED
from connector.outbox.records import DbPosition, NewCdr
from connector.timeutil import utc_now

if TYPE_CHECKING:
    from connector.config import Settings

log = logging.getLogger(__name__)

# The AMI event of a CDR is sent when its row is inserted; the writer commits it within a second or
# two. Recovery is not urgent, so the grace period leaves room for a congested AMI link too.
DEFAULT_GRACE_S = 30.0
DEFAULT_POLL_INTERVAL_S = 10.0
RETRY_MAX_S = 60.0
ERROR_LOG_INTERVAL_S = 300.0
DERIVED = frozenset({"EndTime", "AnswerTime"})  # what a table without an end column cannot tell


def describe_error(error: BaseException, table: str) -> str:
    """One line for a database failure, never the URL (it holds the password)."""
    if isinstance(error, sa.exc.NoSuchTableError):
        return f"table {table} does not exist (CDR_BACKFILL_DB_TABLE)"
    if isinstance(error, sa.exc.DBAPIError) and error.orig is not None:
        error = error.orig
    text = str(error).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


class DbFollower:
    """Poll the CDR table; store what the outbox lacks."""

    def __init__(
        self,
        store: BackfillStore,
        url: str,
        table: str,
        outbox_path: Path,
        *,
        start: str = "end",
        zone_name: str = "",
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        grace_s: float = DEFAULT_GRACE_S,
        page_rows: int = PAGE_ROWS,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url, self.table = url, table
        self.key = source_key(url, table)
        self.shown = f"{shown_url(url)} table {table}"
        self.poll_interval_s, self.grace_s, self.page_rows = poll_interval_s, grace_s, page_rows
        self._store = store
        self._start = start.strip().lower() or "end"
        self._zone = resolve_zone(zone_name)
        self._cutoff = cutoff_text(start, self._zone)
        self._clock, self._monotonic = clock, monotonic
        self._engine = open_engine(url)
        self._twins = AmiTwins(outbox_path)
        self._layout: Layout | None = None
        self._cursor: DbCursor | None = None
        self._stop = asyncio.Event()
        self.rows_read = self.recovered = self.known = 0

    @classmethod
    def from_settings(cls, settings: Settings, store: BackfillStore, **options: Any) -> DbFollower | None:
        """The follower CDR_BACKFILL_DB_* ask for; None when CDR_BACKFILL_DB_URL is empty."""
        url = settings.cdr_backfill_db_url.get_secret_value()
        if not url:
            return None
        return cls(
            store,
            url,
            settings.cdr_backfill_db_table,
            options.pop("outbox_path", settings.outbox_path),
            start=settings.cdr_backfill_from,
            zone_name=settings.asterisk_tz,
            poll_interval_s=settings.cdr_backfill_db_poll,
            **options,
        )

    def now(self) -> datetime:
        """This machine's clock as the PBX's naive local time."""
        local = datetime.fromtimestamp(self._clock(), UTC).astimezone(self._zone)
        return local.replace(tzinfo=None, microsecond=0)

    # ----------------------------------------------------------------- the loop

    def stop(self) -> None:
        """Ask run() to return after the page in progress (its commit is never cut short)."""
        self._stop.set()

    async def run(self) -> None:
        """Poll until stop(); a database that is down or a missing table is retried, never fatal."""
        log.info("recovering CDRs from %s every %g s", self.shown, self.poll_interval_s)
        failures, last_log = 0, 0.0
        try:
            while not self._stop.is_set():
                try:
                    await self.run_once()
                    if failures:
                        log.warning("%s: reading the CDR database works again", self.shown)
                    failures = 0
                except Exception as error:  # every failure is retried; a bug's is logged with its traceback
                    failures += 1
                    BACKFILL_DB_ERRORS.inc()
                    self._layout = None  # the table may be another one when it is back
                    if failures == 1 or time.monotonic() - last_log >= ERROR_LOG_INTERVAL_S:
                        last_log = time.monotonic()
                        self._log_failure(error)
                delay_s = self.poll_interval_s
                if failures:
                    delay_s = backoff_delay(
                        failures, base_s=delay_s, floor_s=min(delay_s, 1.0), cap_s=RETRY_MAX_S
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay_s)
        finally:
            await self.close()

    def _log_failure(self, error: Exception) -> None:
        expected = isinstance(
            error, sa.exc.SQLAlchemyError | OSError | OutboxError | SourceError | TimeoutError
        )
        log.warning(
            "cannot read CDRs from %s: %s; retrying (CDRs from AMI are stored meanwhile)",
            self.shown,
            describe_error(error, self.table),
            exc_info=not expected,  # anything else is a bug: show where
        )

    async def close(self) -> None:
        """Close the database connection and the outbox look-ups (run() does it on the way out)."""
        await self._engine.dispose()
        await asyncio.to_thread(self._twins.close)

    async def run_once(self) -> int:
        """Read and store every row that ended since the position; return how many rows were read."""
        async with self._engine.connect() as connection:
            layout = await self._table(connection)
            cursor = await self._position(connection, layout)
            # A PBX clock ahead of ours is still read, up to a window past ours.
            read = await self._read_all(connection, layout, cursor, self.now() + WINDOW)
        return read

    async def import_range(
        self, since: datetime, until: datetime, progress: Callable[[int], None] | None = None
    ) -> int:
        """Store what the outbox lacks of the rows that ended in [since, until) (naive PBX-local
        times), with no grace and without moving the saved position (`connector backfill --db`);
        call progress(rows read) after each page; return how many rows were read."""
        async with self._engine.connect() as connection:
            layout = await self._table(connection)
            cursor = DbCursor(since, cutoff=self._cutoff)
            return await self._read_all(connection, layout, cursor, until, keep=False, progress=progress)

    async def _table(self, connection: AsyncConnection) -> Layout:
        if self._layout is None:
            layout = await read_layout(connection, self.table)
            if layout.missing:
                raise SourceError(
                    f"table {self.table} lacks {', '.join(layout.missing)}: it is not an Asterisk CDR table "
                    "(check CDR_BACKFILL_DB_TABLE)"
                )
            if await end_indexed(connection, layout) is False:
                log.warning(
                    '%s: no index on "end": each poll reads the whole table; '
                    'CREATE INDEX cdr_end_idx ON %s ("end") (README, "Gap recovery from the CDR database")',
                    self.shown,
                    self.table,
                )
            self._layout = layout
        return self._layout

    async def _position(self, connection: AsyncConnection, layout: Layout) -> DbCursor:
        if self._cursor is None:
            saved = await self._store.db_position(self.key)
            if saved is not None:
                low = parse_position(saved.position)
            else:
                newest_end = local_time(await newest(connection, layout, end=True), self._zone)
                low = first_position(self._start, newest_end, self.now())
                log.info(
                    "%s: first start, reading CDRs that ended from %s on", self.shown, position_text(low)
                )
            self._cursor = DbCursor(low, grace_s=self.grace_s, cutoff=self._cutoff)
        return self._cursor

    async def _read_all(
        self,
        connection: AsyncConnection,
        layout: Layout,
        cursor: DbCursor,
        until: datetime,
        *,
        keep: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Read windows of end time from the cursor to `until`; `keep`: save the position."""
        cursor.begin()
        lo, after, limit, read = cursor.low, None, self.page_rows, 0
        newest_end: datetime | None = None
        while lo < until and not self._stop.is_set():
            hi = min(lo + WINDOW, until)
            rows = await read_page(connection, layout, page_params(layout, lo, hi, self._zone, after, limit))
            records = [record for row in rows if (record := db_record(row, self._zone)) is not None]
            full = len(rows) >= limit
            if full:
                records = _whole_groups(records)
                if not records:  # one end second and UniqueID fill the page: read it whole
                    limit *= 2
                    continue
                limit = self.page_rows
                after = (records[-1].end, dict(records[-1].headers).get("UniqueID", ""))
            read += len(records)
            if records:
                newest_end = max(newest_end or records[-1].end, records[-1].end)
                await self._store_page(records, layout, cursor, keep)
            if progress is not None:
                progress(self.rows_read + read)
            if full:
                continue
            after = None
            if hi >= until:
                break
            lo = await self._next_window(connection, layout, hi)
        self.rows_read += read
        if newest_end is not None and keep:
            BACKFILL_DB_LAG.set(max(0.0, (self.now() - newest_end).total_seconds()))
        return read

    async def _next_window(self, connection: AsyncConnection, layout: Layout, hi: datetime) -> datetime:
        """The next window starts at the next end there is (history may hold long empty stretches)."""
        following = local_time(await next_end(connection, layout, hi, self._zone), self._zone)
        return hi if following is None else max(hi, following)

    async def _store_page(
        self, records: Sequence[DbRecord], layout: Layout, cursor: DbCursor, keep: bool
    ) -> None:
        page = cursor.sort(
            records, complete=layout.complete, now=self.now(), clock=self._monotonic(), received_at=utc_now()
        )
        rows = await asyncio.to_thread(self._unmatched, page, layout)
        low = cursor.next_low()
        position = DbPosition(self.key, position_text(low)) if keep else None
        added = await self._store.append_cdrs(rows, position)
        cursor.commit(page, low)
        self.recovered += added
        self.known += len(page.ends) - added
        if added:
            CDRS_RECOVERED.labels(source="db").inc(added)
            log.info("%s: recovered %d CDR(s) that did not come over AMI", self.shown, added)

    def _unmatched(self, page: Sorted, layout: Layout) -> list[NewCdr]:
        """The rows no stored record is (blocking: runs in a worker thread)."""
        rows = page.rows
        unknown = self._twins.unknown(rows)
        if not unknown:
            return []
        stored = self._twins.ami_cdrs(
            sorted({rows[i].uniqueid for i in unknown if rows[i].uniqueid}), any_source=True
        )
        derived = frozenset() if layout.has_end else DERIVED
        kept = []
        for i in unknown:
            row = rows[i]
            own = {name: value for name, value in first_wins(row.headers).items() if name not in derived}
            matches = [twin for twin in stored.get(row.uniqueid, ()) if same_cdr(own, twin.fields)]
            # Without a Sequence, identical rows (ForkCDR twins) are the n-th of their identity: only
            # as many of them as there are matching records are those records.
            if matches and (own.get("Sequence") or (row.occurrence or 1) <= len(matches)):
                continue
            kept.append(row)
        return kept


def _whole_groups(records: list[DbRecord]) -> list[DbRecord]:
    """A full page without its last (end, UniqueID) group: the next page, after the rows kept,
    starts with that group whole, so identical rows are never split between two pages."""
    last = records[-1]
    key = (last.end, dict(last.headers).get("UniqueID", ""))
    cut = len(records)
    while cut and (records[cut - 1].end, dict(records[cut - 1].headers).get("UniqueID", "")) == key:
        cut -= 1
    return records[:cut]
