"""The retention pass of `connector run`: purge by age, hold the size bound, give the space back.

Once at start, then every OUTBOX_PURGE_INTERVAL seconds (app.py runs it in the background):

1. delete `sent` and `filtered` rows settled more than OUTBOX_RETENTION_DAYS ago;
2. while the outbox uses more than OUTBOX_MAX_MB, delete the oldest settled rows whatever their age.
   `pending` and `failed` rows are never deleted: when they alone pass the bound, the pass says so
   (one WARNING line per pass, `outbox_over_bound` 1) and storing goes on while the disk has room;
3. give the freed pages back to the file system (incremental vacuum, in small steps) and checkpoint
   the WAL, so the file shrinks instead of keeping its largest size.

What the bound compares is the pages in use, (page_count - freelist_count) * page_size
(space.SpaceFigures.in_use_bytes): free pages are left out because step 3 gives them back, and the
WAL because deleting rows cannot shrink it (it keeps the size of the largest burst; counting it
made a pass delete every settled row after a burst of ingest). The file on disk is the bound plus
the WAL, a few MB (bench/year_bench.py measures it).

Every step is one small transaction on the store's one writer connection, which ingest shares, so
ingest waits for one chunk at most; the pass measures its longest (bench/year_bench.py prints it).
The decisions are the pure functions at the top; RetentionPass does the I/O.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from connector import metrics
from connector.outbox.records import Kind, State
from connector.outbox.space import MIB, SpaceFigures
from connector.outbox.statements import SETTLED_CHUNK_ROWS
from connector.timeutil import utc_in

if TYPE_CHECKING:
    from connector.config import Settings
    from connector.outbox.store import Store

log = logging.getLogger(__name__)

# One incremental-vacuum step gives back at most this many pages (512 KiB at 4 KiB pages), moving
# pages in use from the end of the file into free ones: ~2-3 ms, as short as a chunk of deletes.
VACUUM_STEP_PAGES = 128


@dataclass(frozen=True)
class RetentionSettings:
    """What the pass keeps: rows settled within retention_s, and the outbox within max_bytes."""

    retention_s: float
    interval_s: float = 3600.0
    max_bytes: int = 0  # 0: no bound

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionSettings:
        """Take OUTBOX_RETENTION_DAYS, OUTBOX_PURGE_INTERVAL and OUTBOX_MAX_MB."""
        return cls(
            retention_s=settings.outbox_retention_days * 86400.0,
            interval_s=settings.outbox_purge_interval,
            max_bytes=round(settings.outbox_max_mb * MIB),
        )


@dataclass(frozen=True)
class PassReport:
    """What one pass did, and the outbox's figures after it."""

    by_age: Mapping[Kind, int]
    for_bound: Mapping[Kind, int]
    pages_given_back: int
    over_bound: bool
    space: SpaceFigures
    longest_write_s: float

    @property
    def purged(self) -> int:
        """Rows deleted, for age and for the bound."""
        return sum(self.by_age.values()) + sum(self.for_bound.values())


def over_bound(space: SpaceFigures, max_bytes: int) -> bool:
    """True when the pages in use pass the bound (max_bytes 0: there is none)."""
    return max_bytes > 0 and space.in_use_bytes > max_bytes


def oldest_kind(oldest: Mapping[Kind, str | None]) -> Kind | None:
    """The table holding the oldest settled row (ISO times sort as text); None when neither has one."""
    settled = {kind: when for kind, when in oldest.items() if when is not None}
    return min(settled, key=lambda kind: (settled[kind], kind.value)) if settled else None


def vacuum_step(space: SpaceFigures, step_pages: int) -> int:
    """How many pages the next vacuum step gives back (0: nothing is free)."""
    return min(space.freelist_count, step_pages)


def _mb(size_bytes: float) -> str:
    return f"{size_bytes / MIB:,.1f} MB"


def over_bound_message(
    space: SpaceFigures, max_bytes: int, counts: Mapping[State, int], free: int | None
) -> str:
    """The WARNING line of a pass that found the bound passed with only pending and failed rows left."""
    room = f" ({_mb(free)} free)" if free is not None else ""
    return (
        f"outbox over its size bound: its rows use {_mb(space.in_use_bytes)}, more "
        f"than OUTBOX_MAX_MB={max_bytes / MIB:g}, and holds only pending and failed rows, which are never "
        f"deleted ({counts[State.PENDING]:,} pending, {counts[State.FAILED]:,} failed); storing goes on "
        f"while DATA_DIR has room{room}: fix delivery (`connector status` shows why rows are not sent) "
        "or raise OUTBOX_MAX_MB"
    )


def summary_line(report: PassReport, settings: RetentionSettings) -> str:
    """One line per pass: what it deleted and gave back, the size after it, its longest write."""
    by_age = ", ".join(f"{count:,} {kind.value}" for kind, count in report.by_age.items())
    for_bound = sum(report.for_bound.values())
    bound = f"OUTBOX_MAX_MB={settings.max_bytes / MIB:g}" if settings.max_bytes else "no size bound"
    pages = report.pages_given_back
    return (
        f"retention: purged {by_age} rows settled over {settings.retention_s / 86400:g} days ago"
        f" and {for_bound:,} more for {bound}; gave back {pages:,} pages"
        f" ({_mb(pages * report.space.page_size)}); rows use {_mb(report.space.in_use_bytes)},"
        f" the WAL {_mb(report.space.wal_bytes)};"
        f" longest write {report.longest_write_s * 1000:.1f} ms"
    )


def _free_bytes(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return None


class RetentionPass:
    """Purge by age, hold the bound and give space back, in chunks; `run_once` is one pass."""

    def __init__(
        self,
        store: Store,
        settings: RetentionSettings,
        *,
        chunk_rows: int = SETTLED_CHUNK_ROWS,
        vacuum_step_pages: int = VACUUM_STEP_PAGES,
    ) -> None:
        self._store = store
        self.settings = settings
        self._chunk_rows = chunk_rows
        self._vacuum_step_pages = vacuum_step_pages
        self._longest_s = 0.0
        metrics.OUTBOX_MAX_BYTES.set(settings.max_bytes)
        for kind in Kind:  # exported as 0 from the start, not only after a first deletion
            metrics.OUTBOX_PURGED_ROWS.labels(table=kind.value)

    async def run_once(self) -> PassReport:
        """One pass: purge by age, then the bound, then give the freed pages back."""
        self._longest_s = 0.0
        # Checkpointed first on the statistics connection: else the WAL, grown by ingest since the
        # last pass, crosses SQLite's autocheckpoint threshold during a chunk, and that chunk's commit
        # copies it all into the file while ingest waits (11 ms instead of 2; bench/year_bench.py).
        await self._store.checkpoint()
        by_age = await self._purge_by_age()
        for_bound, over = await self._hold_bound()
        pages = await self._give_back()
        await self._store.checkpoint()
        report = PassReport(by_age, for_bound, pages, over, await self._store.space(), self._longest_s)
        metrics.OUTBOX_OVER_BOUND.set(int(over))
        if over:
            await self._warn_over_bound(report.space)
        level = logging.INFO if report.purged or pages else logging.DEBUG
        log.log(level, summary_line(report, self.settings))
        return report

    async def _purge_by_age(self) -> dict[Kind, int]:
        cutoff = utc_in(-self.settings.retention_s)
        purged = dict.fromkeys(Kind, 0)
        for kind in Kind:
            while True:
                removed = await self._delete(kind, cutoff)
                purged[kind] += removed
                if removed < self._chunk_rows:
                    break
        return purged

    async def _hold_bound(self) -> tuple[dict[Kind, int], bool]:
        """Delete the oldest settled rows while over the bound; True when none is left to delete."""
        deleted = dict.fromkeys(Kind, 0)
        while over_bound(await self._store.space(), self.settings.max_bytes):
            kind = oldest_kind(await self._store.oldest_settled())
            if kind is None:
                return deleted, True
            # Each iteration deletes at least one row, so the loop ends with the settled rows at worst.
            deleted[kind] += await self._delete(kind, None)
        return deleted, False

    async def _give_back(self) -> int:
        given = 0
        while (step := vacuum_step(await self._store.space(), self._vacuum_step_pages)) > 0:
            started = time.perf_counter()
            pages = await self._store.give_back_pages(step)
            self._note_write(started)
            if pages <= 0:
                break  # a file made without incremental vacuum keeps its free pages (and reuses them)
            given += pages
            await asyncio.sleep(0)
        return given

    async def _delete(self, kind: Kind, settled_before: str | None) -> int:
        started = time.perf_counter()
        removed = await self._store.delete_settled(kind, self._chunk_rows, settled_before)
        self._note_write(started)
        metrics.OUTBOX_PURGED_ROWS.labels(table=kind.value).inc(removed)
        # Let an append that waits for the connection in before the next chunk.
        await asyncio.sleep(0)
        return removed

    def _note_write(self, started: float) -> None:
        # Measured around the call, so it includes any wait for the connection: an upper bound.
        self._longest_s = max(self._longest_s, time.perf_counter() - started)

    async def _warn_over_bound(self, space: SpaceFigures) -> None:
        stats = await self._store.stats(recent_failures=0)
        counts = {state: sum(table.counts[state] for table in stats.tables.values()) for state in State}
        free = _free_bytes(self._store.path)
        log.warning(over_bound_message(space, self.settings.max_bytes, counts, free))
