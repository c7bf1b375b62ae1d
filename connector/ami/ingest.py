"""Cdr event → outbox row, and the buffered writer that commits rows in groups.

The socket reader calls `CdrWriter.on_cdr` for every Cdr event: it only appends to an in-memory
buffer and returns, so reading never waits on the disk (Asterisk drops a client whose socket
blocks). The writer task commits everything buffered in one transaction per round (group commit:
one fsync per burst, not per row). When the outbox cannot be written (disk full, database locked)
the rows stay buffered and the write is retried with backoff; rows are dropped — each counted and
logged with what is needed to recover it from Master.csv — only once the buffer bound is reached.

One exception to "never waits": when the input outruns a writer that is healthy (a flood, far
beyond any PBX's rate), `saturated` asks the reader to pause for a moment (AmiClient's `gate`), so
TCP flow control holds the excess in the kernel instead of this process's memory. Never while
writes fail, and never for longer than `max_pause_s` at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from connector.backoff import backoff_delay
from connector.cdr.identity import (
    canonical_identity,
    fingerprint_of_json,
    first_wins,
    headers_json,
    linked_id,
)
from connector.cdr.raw import raw_json
from connector.errors import OutboxError
from connector.metrics import (
    CDRS_DROPPED,
    CDRS_DUPLICATE,
    CDRS_RECEIVED,
    CDRS_STORED,
    INGEST_BUFFER_ROWS,
    OUTBOX_WRITABLE,
    OUTBOX_WRITE_ERRORS,
)
from connector.outbox.records import Headers, NewCdr
from connector.timeutil import to_iso

log = logging.getLogger(__name__)

WRITE_ERRORS = (OutboxError, sqlite3.Error, OSError)
MAPPINGS_ADVICE = (
    "Cdr events carry no LinkedID header: calls cannot be grouped and recordings matched less "
    "reliably. Add to /etc/asterisk/cdr_manager.conf:\n"
    "[mappings]\nlinkedid => LinkedID\nsequence => Sequence\n"
    "then run `asterisk -rx 'module reload cdr_manager.so'`"
)


class CdrSink(Protocol):
    """Where the writer commits rows (connector.outbox.store.Store)."""

    async def append_cdrs(self, rows: Sequence[NewCdr]) -> int:
        """Store rows in one transaction; return how many were new."""
        ...


_second_cache: list[tuple[int, str]] = [(-1, "")]


def received_at(timestamp: float) -> str:
    """Format a receive time as UTC ISO-8601, e.g. 2026-11-27T00:10:36.123456Z."""
    # Formatting a datetime costs more than the rest of a row's bookkeeping: reuse the
    # seconds part, which a burst of rows shares.
    whole = int(timestamp)
    cached_second, prefix = _second_cache[0]
    if whole != cached_second:
        prefix = to_iso(datetime.fromtimestamp(whole, UTC))[:-8]
        _second_cache[0] = (whole, prefix)
    micros = min(int((timestamp - whole) * 1_000_000), 999_999)
    return f"{prefix}.{micros:06d}Z"


def new_cdr(headers: Headers, timestamp: float) -> NewCdr:
    """Build the outbox row of one Cdr event: every header as received, plus its identity."""
    fields = first_wins(headers)
    return NewCdr(
        headers=headers,
        received_at=received_at(timestamp),
        identity=canonical_identity(fields),
        # Over the frame's [name, value] array, as the fingerprints already stored were computed.
        fingerprint=fingerprint_of_json(headers_json(headers)),
        uniqueid=fields.get("UniqueID", ""),
        linkedid=linked_id(fields) or None,
        raw_json=raw_json(headers),
    )


def describe(headers: Headers) -> str:
    """Summarise a CDR for a log line (enough to find it in Master.csv)."""
    fields = first_wins(headers)
    wanted = ("UniqueID", "StartTime", "Source", "Destination", "Disposition")
    return " ".join(f"{name}={fields.get(name, '')!r}" for name in wanted)


class CdrWriter:
    """Buffer Cdr headers from the reader and commit them to the outbox in groups."""

    def __init__(
        self,
        store: CdrSink,
        *,
        max_buffer_rows: int = 100_000,
        max_batch_rows: int = 3_000,
        linger_s: float = 0.002,
        high_water_rows: int = 6_000,
        low_water_rows: int = 4_500,
        max_pause_s: float = 5.0,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        error_log_interval_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self.max_buffer_rows = max_buffer_rows
        self.max_batch_rows = max_batch_rows
        self.linger_s = linger_s
        self.high_water_rows, self.low_water_rows = high_water_rows, low_water_rows
        self.max_pause_s = max_pause_s
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self.error_log_interval_s = error_log_interval_s
        self._clock = clock
        self._buffer: deque[NewCdr] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._progress = asyncio.Condition()
        self._stop_deadline: float | None = None
        self._failing_since: float | None = None
        self._last_error_log = 0.0
        self._linkedid_checked = False
        self._watchers: list[Callable[[bool], None]] = []
        self._saturated = False
        self._pause_timer: asyncio.TimerHandle | None = None
        self._may_pause = True
        self.received = self.stored = self.duplicates = self.dropped = 0
        self._received_counted = 0

    @property
    def outbox_writable(self) -> bool:
        """False while commits to the outbox are failing (health checks report it)."""
        return self._failing_since is None

    @property
    def buffered(self) -> int:
        """Rows read but not yet committed."""
        return len(self._buffer)

    def on_cdr(self, headers: Headers) -> None:
        """Take one Cdr event from the reader: buffer its row and wake the writer (never blocks)."""
        # The metric is brought up to date by the writer (_sync_received): a Prometheus increment
        # per frame costs as much as parsing it.
        self.received += 1
        if len(self._buffer) >= self.max_buffer_rows:
            self._drop(headers, "the outbox is not writable and the memory buffer is full")
            return
        # The row is built now, while the previous group commit is in SQLite's thread: hashing
        # overlaps the disk work instead of delaying the next commit.
        try:
            row = new_cdr(headers, self._clock())
        except Exception:
            log.exception("cannot build the outbox row of a Cdr event")
            self._drop(headers, "its outbox row could not be built")
            return
        if not self._linkedid_checked:
            self._linkedid_checked = True
            if row.linkedid is None:
                log.warning(MAPPINGS_ADVICE)
        self._buffer.append(row)
        self._wake.set()
        if len(self._buffer) >= self.high_water_rows and not self._saturated:
            self._saturate()

    @property
    def saturated(self) -> bool:
        """True while the reader should pause: input outruns a writer that is still healthy."""
        return self._saturated

    def watch(self, on_change: Callable[[bool], None]) -> None:
        """Call on_change(True) when the reader should pause reading, on_change(False) to resume."""
        self._watchers.append(on_change)

    def _saturate(self) -> None:
        # Pausing the socket lets TCP flow control slow a sender that outruns a healthy writer,
        # instead of growing the buffer (the kernel's socket buffers absorb the short pause).
        # Never while writes fail (rows must keep flowing into the bounded buffer), and never
        # longer than max_pause_s at a time (a stalled disk must not stop reading).
        if not self._may_pause or self._failing_since is not None or not self._watchers:
            return
        self._pause_timer = asyncio.get_running_loop().call_later(self.max_pause_s, self._stall)
        self._set_saturated(True)

    def _stall(self) -> None:
        self._may_pause = False
        self._set_saturated(False)

    def _set_saturated(self, saturated: bool) -> None:
        if saturated == self._saturated:
            return
        self._saturated = saturated
        if not saturated and self._pause_timer is not None:
            self._pause_timer.cancel()
            self._pause_timer = None
        for on_change in self._watchers:
            on_change(saturated)

    def _drop(self, headers: Headers, why: str) -> None:
        self.dropped += 1
        CDRS_DROPPED.inc()
        log.error("CDR DROPPED (%s): recover it from Master.csv: %s", why, describe(headers))

    async def run_once(self) -> int:
        """Commit up to max_batch_rows buffered rows in one transaction; return how many."""
        async with self._lock:
            count = min(len(self._buffer), self.max_batch_rows)
            if count == 0:
                return 0
            INGEST_BUFFER_ROWS.set(len(self._buffer))
            self._sync_received()
            rows = list(itertools.islice(self._buffer, count))
            try:
                new = await self._store.append_cdrs(rows)
            except Exception as error:
                self._write_failed(error)
                raise
            # Only the writer removes rows, from the left; the reader only appends on the right.
            for _ in range(count):
                self._buffer.popleft()
            self._write_succeeded(count, new)
        async with self._progress:
            self._progress.notify_all()
        return count

    def _sync_received(self) -> None:
        CDRS_RECEIVED.inc(self.received - self._received_counted)
        self._received_counted = self.received

    async def wait_for_rows(self, count: int) -> None:
        """Wait until `count` rows in total were committed (stored or found duplicate)."""
        async with self._progress:
            await self._progress.wait_for(lambda: self.stored + self.duplicates >= count)

    async def flush(self) -> None:
        """Commit everything buffered now; raise the store's error if a write fails."""
        while self._buffer:
            await self.run_once()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask run() to commit what was read, then return; give up retrying after timeout_s.

        Stop the reader first (AmiClient.close()), so that nothing arrives after the flush.
        """
        self._stop_deadline = time.monotonic() + timeout_s
        self._wake.set()

    async def run(self) -> None:
        """Commit rows as they arrive, retrying failed writes, until stop() and a final flush."""
        failures = 0
        while True:
            if not self._buffer:
                if self._stop_deadline is not None:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.linger_s and self._stop_deadline is None:
                if len(self._buffer) < self.max_batch_rows:
                    await asyncio.sleep(self.linger_s)  # group the rest of the burst
            try:
                await self.run_once()
                failures = 0
            except Exception:  # logged and counted by run_once; the rows stay buffered
                failures += 1
                if self._give_up():
                    return
                await self._retry_pause(failures)

    def _give_up(self) -> bool:
        if self._stop_deadline is None or time.monotonic() < self._stop_deadline:
            return False
        lost = len(self._buffer)
        for row in self._buffer:
            self._drop(row.headers, "shutting down with the outbox not writable")
        self._buffer.clear()
        INGEST_BUFFER_ROWS.set(0)
        log.error("shutting down with the outbox still not writable: %d CDRs lost", lost)
        return True

    async def _retry_pause(self, failures: int) -> None:
        delay_s = backoff_delay(
            failures, base_s=self.retry_initial_s, floor_s=self.retry_initial_s, cap_s=self.retry_max_s
        )
        if self._stop_deadline is not None:
            delay_s = min(delay_s, max(self._stop_deadline - time.monotonic(), 0.0))
        await asyncio.sleep(delay_s)

    def _write_failed(self, error: BaseException) -> None:
        OUTBOX_WRITE_ERRORS.inc()
        OUTBOX_WRITABLE.set(0)
        self._set_saturated(False)
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = self._last_error_log = now
            log.error(
                "cannot write CDRs to the outbox (%s): %d CDRs kept in memory (bound %d), "
                "retrying; check free space and that no other process locks the database",
                error,
                len(self._buffer),
                self.max_buffer_rows,
                # A write error is expected (disk, lock); anything else is a bug: show where.
                exc_info=not isinstance(error, WRITE_ERRORS),
            )
        elif now - self._last_error_log >= self.error_log_interval_s:
            self._last_error_log = now
            log.error(
                "outbox still not writable after %.0f s (%s): %d CDRs in memory (bound %d)",
                now - self._failing_since,
                error,
                len(self._buffer),
                self.max_buffer_rows,
            )

    def _write_succeeded(self, count: int, new: int) -> None:
        self.stored += new
        self.duplicates += count - new
        CDRS_STORED.inc(new)
        if count > new:
            CDRS_DUPLICATE.inc(count - new)
        INGEST_BUFFER_ROWS.set(len(self._buffer))
        OUTBOX_WRITABLE.set(1)
        self._may_pause = True
        if self._saturated and len(self._buffer) <= self.low_water_rows:
            self._set_saturated(False)
        if self._failing_since is not None:
            log.warning(
                "outbox writable again after %.1f s; %d CDRs still buffered",
                time.monotonic() - self._failing_since,
                len(self._buffer),
            )
            self._failing_since = None
