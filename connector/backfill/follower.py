"""`tail -F` for Master.csv: store every CDR line whose AMI twin is not already in the outbox.

Each batch of complete lines is stored with the position reached, in one transaction, so a crash
can neither skip nor double-read a line; the in-memory position moves only after that commit.

Grace period: a line is read only once the file has been at least that long for `grace_s`
(the sizes seen at each poll are remembered), so the AMI event of the same CDR, which Asterisk
emits at the same moment, is normally committed first and the CSV line finds its twin. Nothing is
held in memory for this: the bytes simply stay in the file until they are old enough. Either order
still gives one row (the dedupe key); the grace period only decides which source stores it.

Rotation (the path names a new inode): the old file is read to its end, then the new one from its
start. Truncation (the file got shorter): read again from the start. A file that does not exist
yet is waited for and read from its start. On the first start ever, CDR_BACKFILL_FROM decides:
`end` (default, no flood of history), `start`, or an ISO date (lines whose StartTime is earlier
are skipped). After that the position saved in the outbox decides.

Before a batch is stored, lines whose CDR came over AMI with times shifted by whole hours (a wrong
CDR_BACKFILL_CSV_GMT or ASTERISK_TZ) are left out and warned about (connector.backfill.guard):
stored, each would be delivered a second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from connector.backfill.guard import TimeGuard
from connector.backfill.lines import (
    LineParser,
    Malformed,
    OccurrenceWindow,
    ParsedLines,
    check_layout,
    cutoff_text,
)
from connector.backfill.tail import (
    BATCH_BYTES,
    OpenFile,
    complete_lines,
    ends_a_line,
    find_inode,
    line_count,
    lines_before,
    stat_or_none,
)
from connector.backoff import backoff_delay
from connector.cdr.times import resolve_zone
from connector.errors import ConfigError, OutboxError
from connector.metrics import BACKFILL_LAG_BYTES, BACKFILL_MALFORMED, CDRS_RECOVERED
from connector.outbox.records import CsvPosition, DbPosition, NewCdr
from connector.outbox.store import Store
from connector.timeutil import utc_now

if TYPE_CHECKING:
    from connector.config import Settings

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 5.0
DEFAULT_POLL_INTERVAL_S = 1.0
RETRY_MIN_S = 0.1  # the first retry waits the poll interval, and at least this
RETRY_MAX_S = 30.0
ERROR_LOG_INTERVAL_S = 60.0
MALFORMED_LOG_LIMIT = 100  # lines logged one by one per follower; after that, one line per batch


class BackfillStore(Protocol):
    """What the followers need of the outbox: the Store, or in `run` a NotifyingSink waking the drainer."""

    async def append_cdrs(
        self, rows: Sequence[NewCdr], position: CsvPosition | DbPosition | None = None
    ) -> int:
        """Store rows and the position in one transaction; return how many rows were new."""
        ...

    async def csv_position(self, path: str) -> CsvPosition | None:
        """The position saved for path."""
        ...

    async def db_position(self, source: str) -> DbPosition | None:
        """The position saved for a CDR database source."""
        ...


@dataclass
class Batch:
    """Lines read but not yet committed, and where the file stands once they are."""

    parsed: ParsedLines
    position: CsvPosition
    lines: int
    window: OccurrenceWindow | None = None
    switch_to: OpenFile | None = None  # after a rotation: the new file, opened at its start


def log_malformed(name: object, malformed: Sequence[Malformed], already_logged: int) -> int:
    """Log malformed lines with their numbers (a bounded number of them); return how many logged."""
    logged = 0
    for item in malformed:
        if already_logged + logged >= MALFORMED_LOG_LIMIT:
            break
        log.warning("%s line %d skipped: %s", name, item.line, item.reason)
        logged += 1
    rest = len(malformed) - logged
    if rest:
        log.warning(
            "%s: %d more malformed lines skipped (last at line %d); check CDR_BACKFILL_COLUMNS",
            name,
            rest,
            malformed[-1].line,
        )
    return logged


class CsvFollower:
    """Follow a Master.csv like `tail -F` and store the CDRs the outbox does not have."""

    def __init__(
        self,
        store: BackfillStore,
        path: str | Path,
        layout: Sequence[str],
        *,
        start: str = "end",
        zone_name: str = "",
        gmt: bool = False,
        outbox_path: Path | None = None,
        grace_s: float = DEFAULT_GRACE_S,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        batch_bytes: int = BATCH_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # The key of the saved position: `a//b/./Master.csv` and `a/b/Master.csv` are one file.
        self.key = os.path.normpath(str(path))
        self.path = Path(self.key)
        self.grace_s, self.poll_interval_s, self.batch_bytes = grace_s, poll_interval_s, batch_bytes
        self._store = store
        self._start = start.strip().lower()
        zone = resolve_zone(zone_name)
        self._parser = LineParser(layout, cutoff_text(start, zone), gmt_zone=zone if gmt else None)
        # Lines are compared with the outbox's AMI CDRs before they are stored (guard.py); the
        # outbox is the store's file unless told (in `run` the store is a NotifyingSink).
        outbox_path = outbox_path or (store.path if isinstance(store, Store) else None)
        self._guard = TimeGuard(outbox_path, gmt=gmt, zone=zone) if outbox_path else None
        self._clock = clock
        self._stop = asyncio.Event()
        self._file: OpenFile | None = None
        self._saved: CsvPosition | None = None
        self._loaded = self._seen_missing = self._rotated = self._dirty = False
        self._malformed_logged = 0
        self.lines_read = self.recovered = self.known = self.malformed = self.skipped = self.shifted = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        store: BackfillStore,
        **options: Any,
    ) -> CsvFollower | None:
        """Build the follower CDR_BACKFILL_* ask for; None when CDR_BACKFILL_CSV is empty.

        `options` go to the constructor (grace_s, poll_interval_s, batch_bytes, outbox_path).
        """
        path = settings.cdr_backfill_csv.strip()
        if not path:
            return None
        try:
            layout = check_layout(settings.cdr_backfill_columns)
        except ValueError as error:
            raise ConfigError([f"CDR_BACKFILL_COLUMNS: {error}"]) from None
        return cls(
            store,
            path,
            layout,
            start=settings.cdr_backfill_from,
            zone_name=settings.asterisk_tz,
            gmt=settings.cdr_backfill_csv_gmt,
            **({"outbox_path": settings.outbox_path} | options),
        )

    # ----------------------------------------------------------------- the loop

    def stop(self) -> None:
        """Ask run() to return after the batch in progress (its commit is never cut short)."""
        self._stop.set()

    async def run(self) -> None:
        """Poll and store until stop(); errors are logged and retried with backoff."""
        failures = 0
        last_log = 0.0
        try:
            while not self._stop.is_set():
                try:
                    await self.run_once()
                    if failures:
                        log.warning("%s: reading and storing works again", self.key)
                    failures = 0
                except Exception as error:
                    failures += 1
                    if failures == 1 or time.monotonic() - last_log >= ERROR_LOG_INTERVAL_S:
                        last_log = time.monotonic()
                        self._log_failure(error)
                await self._pause(failures)
        finally:
            await asyncio.to_thread(self.close)

    def _log_failure(self, error: Exception) -> None:
        expected = isinstance(error, OSError | OutboxError)
        log.error(
            "cannot follow %s (%s); retrying. Check that it is mounted readable and that the outbox "
            "is writable",
            self.key,
            error,
            exc_info=not expected,  # anything but I/O and outbox errors is a bug: show where
        )

    async def _pause(self, failures: int) -> None:
        delay_s = self.poll_interval_s
        if failures:
            first_s = max(delay_s, RETRY_MIN_S)
            delay_s = backoff_delay(failures, base_s=first_s, floor_s=first_s, cap_s=RETRY_MAX_S)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), delay_s)

    def close(self) -> None:
        """Close the file being read and the outbox look-ups (run() does it on the way out)."""
        if self._guard is not None:
            self._guard.close()
        if self._file is not None:
            self._file.close()
            self._file = None

    async def run_once(self) -> int:
        """Poll the file once and store every line old enough; return how many lines were read."""
        if not self._loaded:
            self._saved = await self._store.csv_position(self.key)
            self._loaded = True
        now = self._clock()
        await asyncio.to_thread(self._poll, now)
        if self._dirty and self._file is not None:
            await self._store.append_cdrs([], position=self._position(self._file))
            self._dirty = False
        read = 0
        while not self._stop.is_set():
            batch = await asyncio.to_thread(self._next_batch, now)
            if batch is None:
                break
            await self._commit(batch)
            read += batch.lines
        BACKFILL_LAG_BYTES.set(self.lag_bytes())
        return read

    def lag_bytes(self) -> int:
        """Bytes of the file (as last seen) not read yet."""
        file = self._file
        if file is None or not file.sizes:
            return 0
        return max(0, file.sizes[-1][1] - file.offset)

    # ------------------------------------------------ file side (worker thread)

    def _position(self, file: OpenFile) -> CsvPosition:
        return CsvPosition(self.key, file.inode, file.offset, file.line)

    def _poll(self, now: float) -> None:
        if self._file is None:
            self._open_first(now)
            if self._file is None:
                self._seen_missing = True
                return
        file = self._file
        newer = None if self._rotated else stat_or_none(self.path)
        if newer is not None and newer.st_ino != file.inode:
            self._rotated = True
            log.info("%s was rotated; reading the old file to its end before the new one", self.key)
        size = file.size()
        if size < file.offset:
            log.warning(
                "%s was truncated (%d bytes, %d already read); reading it again from the start",
                file.name,
                size,
                file.offset,
            )
            file.restart()
            self._dirty = True
        file.observe(now, size)

    def _open(
        self, name: Path, offset: int, line: int, now: float, handle: BinaryIO | None = None
    ) -> OpenFile:
        """Open name at a saved position, checking it still makes sense, and rebuild the window."""
        handle = handle or name.open("rb")
        size = handle.seek(0, 2)
        if offset > size or not ends_a_line(handle, offset):
            log.warning("%s changed since line %d was read; reading it from the start", name, line)
            offset = line = 0
            self._dirty = True
        window = OccurrenceWindow()
        self._parser.remember(lines_before(handle, offset, window.size), window)
        inode = _inode(handle)
        file = OpenFile(handle=handle, name=name, inode=inode, offset=offset, line=line, window=window)
        file.observe(now, size)
        return file

    def _open_first(self, now: float) -> None:
        saved = self._saved
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            if saved is not None and (rotated := find_inode(self.path, saved.inode)) is not None:
                self._resume_rotated(rotated, saved, now)
            return
        inode = _inode(handle)
        if saved is not None and saved.inode == inode:
            self._file = self._open(self.path, saved.offset, saved.line, now, handle)
        elif saved is not None and (rotated := find_inode(self.path, saved.inode)) is not None:
            handle.close()
            self._resume_rotated(rotated, saved, now)
        elif saved is not None:
            log.warning(
                "%s was replaced while the connector was stopped and the file read up to line %d is gone: "
                "CDRs written to it after that line were not read (import them with `connector backfill "
                "--file ROTATED-FILE` if it still exists); reading the new file from the start",
                self.key,
                saved.line,
            )
            self._file, self._dirty = self._open(self.path, 0, 0, now, handle), True
        else:
            self._file, self._dirty = self._open_new(handle, now), True
        self._saved = None

    def _resume_rotated(self, rotated: Path, saved: CsvPosition, now: float) -> None:
        log.info("%s was rotated to %s while stopped; reading it from line %d", self.key, rotated, saved.line)
        self._file = self._open(rotated, saved.offset, saved.line, now)
        self._rotated = True
        self._saved = None

    def _open_new(self, handle: BinaryIO, now: float) -> OpenFile:
        """First start ever: the end of the file, unless asked for history or the file is new."""
        if self._start == "end" and not self._seen_missing:
            lines, offset = line_count(handle, handle.seek(0, 2))
            log.info(
                "following %s from its end (line %d); set CDR_BACKFILL_FROM=start or a date to import "
                "its history, or run `connector backfill`",
                self.key,
                lines,
            )
            return self._open(self.path, offset, lines, now, handle)
        log.info("following %s from its start", self.key)
        return self._open(self.path, 0, 0, now, handle)

    def _next_batch(self, now: float) -> Batch | None:
        file = self._file
        if file is None:
            return None
        limit = file.settled(now - self.grace_s)
        lines, end = complete_lines(file.handle, file.offset, limit, self.batch_bytes)
        if lines:
            window = file.window.copy()
            parsed = self._parser.parse(lines, file.line + 1, window, utc_now())
            if self._guard is not None:
                self._guard.screen(parsed)
            position = CsvPosition(self.key, file.inode, end, file.line + len(lines))
            return Batch(parsed, position, len(lines), window=window)
        if self._rotated:
            return self._switch(file, limit, now)
        return None

    def _switch(self, old: OpenFile, limit: int, now: float) -> Batch | None:
        """Leave a rotated file once it has stopped growing for the grace period."""
        size = old.size()
        if limit < size:
            return None
        try:
            handle = self.path.open("rb")
        except FileNotFoundError:
            return None  # the new file does not exist yet
        parsed = ParsedLines()
        if old.offset < size:
            parsed.malformed.append(Malformed(old.line + 1, "incomplete last line of a rotated file"))
        new = self._open(self.path, 0, 0, now, handle)
        position = CsvPosition(self.key, new.inode, 0, 0)
        return Batch(parsed, position, len(parsed.malformed), switch_to=new)

    # ------------------------------------------------------------------ commit

    async def _commit(self, batch: Batch) -> None:
        try:
            new = await self._store.append_cdrs(batch.parsed.rows, position=batch.position)
        except BaseException:
            if batch.switch_to is not None:
                batch.switch_to.close()
            raise
        file = self._file
        assert file is not None
        if batch.switch_to is not None:
            file.close()
            self._file, self._rotated = batch.switch_to, False
            log.info("now following the new %s", self.key)
        else:
            assert batch.window is not None
            file.offset, file.line, file.window = batch.position.offset, batch.position.line, batch.window
        self._account(batch, new, file.name)

    def _account(self, batch: Batch, new: int, name: Path) -> None:
        parsed = batch.parsed
        self.lines_read += batch.lines
        self.recovered += new
        self.known += len(parsed.rows) - new
        self.malformed += len(parsed.malformed)
        self.skipped += parsed.skipped
        self.shifted += parsed.shifted
        if self._guard is not None:
            self._guard.warn(name)
        if new:
            CDRS_RECOVERED.labels(source="csv").inc(new)
            log.info(
                "%s: recovered %d CDR(s) that did not come over AMI (up to line %d)",
                name,
                new,
                batch.position.line,
            )
        if parsed.malformed:
            BACKFILL_MALFORMED.inc(len(parsed.malformed))
            self._malformed_logged += log_malformed(name, parsed.malformed, self._malformed_logged)


def _inode(handle: BinaryIO) -> int:
    return os.fstat(handle.fileno()).st_ino


__all__ = ["DEFAULT_GRACE_S", "BackfillStore", "CsvFollower", "check_layout"]
