"""The read position of the CDR database follower: an end time that cannot skip a row. Pure.

Rows are inserted when their CDR ends, not in start order, and the table has no id to follow. So
the position is an END time L, and every poll reads the rows that ended at or after L, oldest end
first. After a poll (or a page of it) L moves to the newest end read minus MARGIN, but never past
a row still waiting for its grace period and never back:

    L' = max(L, min(newest end read - MARGIN, oldest end still waiting))

A row inserted late (cdr_adaptive_odbc's buffering, cdr.conf batch mode, a clock stepped back) is
still read as long as its end is within MARGIN of the newest end read when it arrives. The rows of
the margin are read again at each poll; `handled` remembers their keys (the keys of rows ended at
or after L), so they cost nothing, and after a restart the outbox recognises them (dedupe key).

Grace: a row is taken once it has been seen for `grace_s` (this machine's monotonic clock, so a
PBX clock that differs does not matter), or at once when it ended more than MARGIN ago by this
machine's clock (history: its AMI event, if any, was sent long ago). So the AMI event of the same
CDR, sent when the row is inserted, is normally stored first.

Identity: a row of a table holding every identity field (cdr_pgsql's full schema) gets the
canonical identity, the one its AMI event has; any other row a hash of every column read (a domain
of its own). Identical rows (ForkCDR twins) are numbered 1, 2, ... in read order: they share
their end, so they are always read together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from connector.cdr.db_rows import TIME_FORMAT, DbRecord
from connector.cdr.identity import (
    canonical_identity,
    dedupe_key,
    fingerprint_of_json,
    headers_json,
    linked_id,
)
from connector.outbox.records import NewCdr

MARGIN = timedelta(minutes=15)
EPOCH = datetime(1970, 1, 1)
_DB_DOMAIN = (("source", "db"),)


def record_identity(record: DbRecord, complete: bool) -> str:
    """The identity a row is stored under (see the module's docstring)."""
    if complete:
        return canonical_identity(record.headers)
    return fingerprint_of_json(headers_json(_DB_DOMAIN + tuple(record.own.items())))


def first_position(spec: str, newest_end: datetime | None, now: datetime) -> datetime:
    """CDR_BACKFILL_FROM at the very first start: `end` (after the newest row there is, or now for an
    empty table), `start`, or an ISO time already in the PBX's local time (naive)."""
    spec = spec.strip().lower()
    if spec in ("", "end"):
        return newest_end + timedelta(seconds=1) if newest_end is not None else now
    if spec == "start":
        return EPOCH
    return datetime.fromisoformat(spec)


def position_text(moment: datetime) -> str:
    """The position as stored (the PBX's local time)."""
    return moment.strftime(TIME_FORMAT)


def parse_position(text: str) -> datetime:
    """A stored position back as a naive local time."""
    return datetime.strptime(text, TIME_FORMAT)


@dataclass
class Sorted:
    """A page sorted: rows to store (their twins not yet screened), rows already handled or before
    the cut, rows waiting for their grace period."""

    rows: list[NewCdr] = field(default_factory=list)
    ends: dict[str, datetime] = field(default_factory=dict)  # key -> end, of `rows`
    handled: int = 0
    skipped: int = 0
    waiting: int = 0


@dataclass
class DbCursor:
    """Where the next read starts, and what the rows since then were."""

    low: datetime
    grace_s: float = 0.0
    margin: timedelta = MARGIN
    cutoff: str | None = None  # StartTime text a row must reach (CDR_BACKFILL_FROM as a date)
    handled: dict[str, datetime] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)  # key -> first seen (monotonic)
    # Of the poll in progress: identities numbered so far, newest end, oldest end still waiting.
    _counts: dict[str, int] = field(default_factory=dict)
    _newest: datetime | None = None
    _waiting: datetime | None = None

    def begin(self) -> None:
        """Start a poll: numbering restarts at the position."""
        self._counts, self._newest, self._waiting = {}, None, None

    def sort(
        self, records: Sequence[DbRecord], *, complete: bool, now: datetime, clock: float, received_at: str
    ) -> Sorted:
        """Number a page's rows and tell which to store now (`now`: this machine's local time)."""
        out = Sorted()
        for record in records:
            identity = record_identity(record, complete)
            occurrence = self._counts.get(identity, 0) + 1
            self._counts[identity] = occurrence
            key = dedupe_key(identity, occurrence)
            self._newest = max(self._newest or record.end, record.end)
            if key in self.handled:
                out.handled += 1
                continue
            first = self.seen.setdefault(key, clock)
            if clock - first < self.grace_s and record.end >= now - self.margin:
                out.waiting += 1
                self._waiting = min(self._waiting or record.end, record.end)
                continue
            fields = dict(record.headers)
            if self.cutoff is not None and fields.get("StartTime", "") < self.cutoff:
                self.handled[key] = record.end
                out.skipped += 1
                continue
            row = NewCdr(
                headers=record.headers,
                received_at=received_at,
                identity=identity,
                fingerprint=None,
                uniqueid=fields.get("UniqueID", ""),
                linkedid=linked_id(fields) or None,
                source="db",
                occurrence=occurrence,
            )
            out.rows.append(row)
            out.ends[key] = record.end
        return out

    def next_low(self) -> datetime:
        """Where the next read would start, given what this poll has read so far."""
        if self._newest is None:
            return self.low
        candidate = self._newest - self.margin
        if self._waiting is not None:
            candidate = min(candidate, self._waiting)
        return max(self.low, candidate)

    def commit(self, done: Sorted, low: datetime) -> None:
        """The page's rows are stored (or recognised) and `low` saved with them: move on."""
        self.handled.update(done.ends)
        self.low = low
        self.handled = {key: end for key, end in self.handled.items() if end >= low}
        self.seen = {key: first for key, first in self.seen.items() if key not in self.handled}
        if len(self.seen) > len(self.handled) + 100_000:  # rows gone from the table while waiting
            self.seen.clear()
