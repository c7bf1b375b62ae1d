"""Rows read back from the outbox, as the records of connector.outbox.records, and statistics."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from connector.outbox.records import CdrRow, Kind, RecordingRow, State

# CDR columns are read from names.CDR_WITH_RAW (the cdr table and its raw headers).
CDR_COLUMNS = (
    "id, received_at, dedupe_key, source, uniqueid, linkedid, raw, state, attempts,"
    " next_attempt_at, last_error, filter_reason, sent_at"
)
RECORDING_COLUMNS = (
    "id, path, size, mtime, sha256, detected_at, uniqueid, linkedid, state, attempts,"
    " next_attempt_at, last_error, sent_at, deleted_at"
)


def cdr_from_row(row: Sequence[Any]) -> CdrRow:
    """Build a CdrRow from a row selected with CDR_COLUMNS."""
    return CdrRow(
        id=row[0],
        received_at=row[1],
        dedupe_key=row[2],
        source=row[3],
        uniqueid=row[4],
        linkedid=row[5],
        raw=json.loads(row[6]),
        state=State(row[7]),
        attempts=row[8],
        next_attempt_at=row[9],
        last_error=row[10],
        filter_reason=row[11],
        sent_at=row[12],
    )


def recording_from_row(row: Sequence[Any]) -> RecordingRow:
    """Build a RecordingRow from a row selected with RECORDING_COLUMNS."""
    return RecordingRow(
        id=row[0],
        path=row[1],
        size=row[2],
        mtime=row[3],
        sha256=row[4],
        detected_at=row[5],
        uniqueid=row[6],
        linkedid=row[7],
        state=State(row[8]),
        attempts=row[9],
        next_attempt_at=row[10],
        last_error=row[11],
        sent_at=row[12],
        deleted_at=row[13],
    )


@dataclass(frozen=True)
class TableStats:
    """Counts per state and the oldest pending row of one table."""

    counts: Mapping[State, int]
    oldest_pending_at: str | None


@dataclass(frozen=True)
class FailedRow:
    """One failed row, for `connector status`."""

    kind: Kind
    id: int
    attempts: int
    last_error: str | None
    failed_at: str


@dataclass(frozen=True)
class OutboxStats:
    """What `connector status` and the metrics show."""

    tables: Mapping[Kind, TableStats]
    recent_failures: Sequence[FailedRow] = field(default_factory=tuple)
