"""Outbox statistics for operators: the gauges behind /metrics and the periodic one-line log."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from connector import metrics
from connector.outbox.records import Kind, State
from connector.outbox.rows import OutboxStats
from connector.outbox.store import Store
from connector.timeutil import age_seconds

log = logging.getLogger("connector.stats")


def _file_bytes(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += path.with_name(path.name + suffix).stat().st_size
        except OSError:
            pass
    return total


def apply_gauges(stats: OutboxStats, outbox_path: Path) -> None:
    """Set the outbox and disk gauges from fresh statistics."""
    for kind, table in stats.tables.items():
        for state in State:
            metrics.OUTBOX_ROWS.labels(table=kind.value, state=state.value).set(table.counts[state])
        metrics.OUTBOX_OLDEST_PENDING_AGE.labels(table=kind.value).set(age_seconds(table.oldest_pending_at))
    cdr = stats.tables[Kind.CDR]
    metrics.CDR_QUEUE_DEPTH.set(cdr.counts[State.PENDING])
    metrics.CDR_OLDEST_PENDING_AGE.set(age_seconds(cdr.oldest_pending_at))
    metrics.RECORDING_QUEUE_DEPTH.set(stats.tables[Kind.RECORDING].counts[State.PENDING])
    metrics.OUTBOX_DB_BYTES.set(_file_bytes(outbox_path))
    try:
        metrics.DATA_DIR_FREE_BYTES.set(shutil.disk_usage(outbox_path.parent).free)
    except OSError:
        pass


def summary_line(stats: OutboxStats) -> str:
    """One line: stored, sent, filtered, failed, backlog and oldest pending age, per table."""
    parts = []
    for kind, table in stats.tables.items():
        counts = table.counts
        stored = sum(counts.values())
        parts.append(
            f"{kind.value}s: stored={stored} sent={counts[State.SENT]} "
            f"filtered={counts[State.FILTERED]} failed={counts[State.FAILED]} "
            f"backlog={counts[State.PENDING]} "
            f"oldest_pending={age_seconds(table.oldest_pending_at):.0f}s"
        )
    return "; ".join(parts)


async def refresh(store: Store) -> OutboxStats:
    """Read fresh statistics and update the gauges."""
    stats = await store.stats()
    apply_gauges(stats, store.path)
    return stats
