"""`connector salvage FILE`: every row a damaged or quarantined outbox still holds, into the live one.

FILE is read through connector.outbox.damaged (never written, row by row around unreadable pages);
its rows go in through Store.import_salvaged, CHUNK_ROWS per transaction, so a `connector run`
beside it waits for one chunk at most. The DATA_DIR lock is not taken: the running connector holds
it, and delivers the imported pending rows at its next due read (within CDR_BATCH_TIMEOUT).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

from connector.outbox.damaged import README_SECTION, DamagedOutbox
from connector.outbox.records import Kind, SalvagedCdr
from connector.outbox.store import Store
from connector.timeutil import parse_iso

# Rows imported per transaction: a `connector run` beside salvage waits for one chunk at most.
CHUNK_ROWS = 500

T = TypeVar("T")


@dataclass
class LostCdrs:
    """When the CDRs that could not be read were received: between the readable ones around them."""

    lost: int = 0
    after: str | None = None  # received_at of the last readable CDR before the first lost one
    before: str | None = None  # ... of the first readable CDR after the last lost one (None: the end)
    _last_read: str | None = None

    def read(self, received_at: str) -> None:
        """Note a readable CDR."""
        if self.lost and self.before is None:
            self.before = received_at
        self._last_read = received_at

    def lose(self) -> None:
        """Note a CDR id that cannot be read."""
        if not self.lost:
            self.after = self._last_read
        self.lost += 1
        self.before = None

    def hint(self) -> str | None:
        """The line that says how gap recovery gets these CDRs back (None: none was lost)."""
        if not self.lost:
            return None
        # --from compares a CDR's StartTime as Asterisk wrote it (local time): a day earlier covers
        # any time zone and any call length; what is already in the outbox is simply skipped.
        since = (parse_iso(self.after) - timedelta(days=1)).date().isoformat() if self.after else "start"
        return (
            f"salvage: {self.lost:,} CDR(s) could not be read, received after {self.after or 'the first row'}"
            f" and before {self.before or 'the last row'}; with gap recovery configured, run"
            f" connector backfill --file <CDR_BACKFILL_CSV> --columns <CDR_BACKFILL_COLUMNS> --from {since}"
            f" (and on its rotated files; {README_SECTION})"
        )


@dataclass
class SalvageCounts:
    """What a salvage did, CDRs and recordings together (CSV positions are not counted)."""

    read: int = 0
    imported: int = 0
    present: int = 0
    unreadable: int = 0
    kind: Kind = Kind.CDR
    at_id: int = 0  # how far the table being read is, of about last_id ids
    last_id: int = 0
    lost_cdrs: LostCdrs = field(default_factory=LostCdrs)

    def line(self) -> str:
        """The last line of `connector salvage`."""
        return (
            f"salvage: read {self.read:,} rows, imported {self.imported:,},"
            f" already present {self.present:,}, unreadable {self.unreadable:,}"
        )

    def progress(self) -> str:
        """The live progress line."""
        return f"{self.kind.value} id {self.at_id:,} of ~{self.last_id:,}  " + self.line().removeprefix(
            "salvage: "
        )


@dataclass(frozen=True)
class Chunk:
    """Up to CHUNK_ROWS rows read from the damaged file, and what reading them met."""

    rows: list[Any]
    unreadable: int
    at_id: int
    done: bool


def _next_chunk(items: Iterator[tuple[int, Any]], at_id: int, lost: LostCdrs | None) -> Chunk:
    """Read on until CHUNK_ROWS rows could be read, or the table ends; note lost CDRs in `lost`."""
    rows: list[Any] = []
    unreadable = 0
    for row_id, item in items:
        at_id = row_id
        if lost is not None and isinstance(item, SalvagedCdr):
            lost.read(item.cdr.received_at)
        elif lost is not None:
            lost.lose()
        if item is None:
            unreadable += 1
            continue
        rows.append(item)
        if len(rows) >= CHUNK_ROWS:
            return Chunk(rows, unreadable, at_id, done=False)
    return Chunk(rows, unreadable, at_id, done=True)


async def salvage_file(
    path: Path, store: Store, progress: Callable[[SalvageCounts], None] | None = None
) -> SalvageCounts:
    """Import every row of the damaged outbox at `path` that can be read; return the counts."""
    loop = asyncio.get_running_loop()
    counts = SalvageCounts()
    # The damaged file's connection lives on this one thread from its opening to its closing.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="salvage") as thread:

        async def on_thread(function: Callable[..., T], *args: Any) -> T:
            return await loop.run_in_executor(thread, function, *args)

        source = await on_thread(DamagedOutbox.open, path)
        try:
            await _import_kind(Kind.CDR, on_thread, source, store, counts, progress)
            await _import_kind(Kind.RECORDING, on_thread, source, store, counts, progress)
            positions = await on_thread(source.positions)
            if positions:
                await store.import_salvaged(positions=positions)
        finally:
            await on_thread(source.close)
    return counts


async def _import_kind(
    kind: Kind,
    on_thread: Callable[..., Any],
    source: DamagedOutbox,
    store: Store,
    counts: SalvageCounts,
    progress: Callable[[SalvageCounts], None] | None,
) -> None:
    """Read one table chunk by chunk and import each chunk in a transaction of its own."""
    if kind is Kind.CDR:
        counts.last_id = await on_thread(source.last_cdr_id)
        items: Iterator[tuple[int, Any]] = source.cdrs(counts.last_id)
    else:
        counts.last_id = await on_thread(source.last_recording_id)
        items = source.recordings(counts.last_id)
    counts.kind, counts.at_id = kind, 0
    lost = counts.lost_cdrs if kind is Kind.CDR else None
    while True:
        chunk: Chunk = await on_thread(_next_chunk, items, counts.at_id, lost)
        if chunk.rows:
            cdrs = chunk.rows if kind is Kind.CDR else ()
            recordings = chunk.rows if kind is Kind.RECORDING else ()
            imported, present = await store.import_salvaged(cdrs, recordings)
            counts.imported += imported
            counts.present += present
        counts.read += len(chunk.rows)
        counts.unreadable += chunk.unreadable
        counts.at_id = chunk.at_id
        if progress is not None:
            progress(counts)
        if chunk.done:
            return
