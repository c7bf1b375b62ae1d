"""Master.csv lines → outbox rows: identity, occurrence number of identical lines, the date cut.

Pure apart from the window object the caller passes in; the follower and `connector backfill`
share it, so both give a line the same dedupe key.
"""

from __future__ import annotations

import csv
import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from connector.cdr.csv_rows import MalformedRow, parse_layout, parse_line, row_headers
from connector.cdr.identity import CANONICAL_FIELDS, canonical_identity, identity_of_values
from connector.cdr.times import utc_to_local_text
from connector.outbox.records import Headers, NewCdr

# How many preceding lines are searched for an identical CDR when numbering occurrences.
# ForkCDR() twins are posted together, so their lines are adjacent; 1000 lines leaves room for
# other channels' CDRs written in between while keeping the memory per file small and fixed.
OCCURRENCE_WINDOW_LINES = 1000
TOO_LONG = "line longer than the maximum line length"
CSV_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
TIME_FIELDS = ("StartTime", "AnswerTime", "EndTime")


def check_layout(spec: str) -> tuple[str, ...]:
    """Parse a column layout (`csv` or a comma list) and insist on every identity field."""
    layout = parse_layout(spec)
    missing = [name for name in CANONICAL_FIELDS if name not in layout]
    if missing:
        raise ValueError(
            f"the layout lacks {', '.join(missing)}: without them a CSV row cannot be matched with "
            "the CDR that came over AMI (every CDR would be sent twice)"
        )
    return layout


def cutoff_text(spec: str, zone: tzinfo) -> str | None:
    """Turn `start`, `end` or an ISO date/time into the StartTime text a kept line must reach.

    Lines are compared in the PBX's local wall-clock time (a usegmtime file's UTC times are
    converted first, see LineParser), so a date without an offset is compared as written; one with
    an offset (or Z) is first converted to `zone` (ASTERISK_TZ).
    """
    spec = spec.strip()
    if spec.lower() in ("", "start", "end"):
        return None
    try:
        moment = datetime.fromisoformat(spec.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{spec!r} is not start or an ISO date such as 2026-11-01") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(zone)
    return moment.strftime(CSV_TIME_FORMAT)


class OccurrenceWindow:
    """The identities of the last `size` lines: numbers identical lines 1, 2, 3, ..."""

    def __init__(self, size: int = OCCURRENCE_WINDOW_LINES) -> None:
        self.size = size
        self._recent: deque[str | None] = deque()
        self._counts: dict[str, int] = {}

    def push(self, identity: str | None) -> int:
        """Record the next line's identity (None: not a CDR); return its occurrence number."""
        recent, counts = self._recent, self._counts
        occurrence = 0
        if identity is not None:
            occurrence = counts.get(identity, 0) + 1
            counts[identity] = occurrence
        recent.append(identity)
        if len(recent) > self.size:
            gone = recent.popleft()
            if gone is not None:
                left = counts[gone] - 1
                if left:
                    counts[gone] = left
                else:
                    del counts[gone]
        return occurrence

    def copy(self) -> OccurrenceWindow:
        """An independent copy (a batch is numbered on a copy until it is committed)."""
        twin = OccurrenceWindow(self.size)
        twin._recent = self._recent.copy()
        twin._counts = self._counts.copy()
        return twin


@dataclass(frozen=True)
class Malformed:
    """A line that is not a CDR of the configured layout."""

    line: int
    reason: str


@dataclass
class ParsedLines:
    """What a run of lines gave: rows to store, malformed lines, lines deliberately skipped, and
    lines left out because their AMI twin is stored with shifted times (connector.backfill.guard)."""

    rows: list[NewCdr] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)
    skipped: int = 0
    shifted: int = 0


def decode(raw: bytes) -> str:
    """Decode a line as the AMI reader does (invalid UTF-8 → U+FFFD), without its CR."""
    return raw.decode("utf-8", "replace").rstrip("\r")


class _Desync(Exception):
    """The CSV reader took more than one line for a record (an unterminated quote)."""


def split_lines(texts: Sequence[str]) -> list[list[str] | MalformedRow]:
    """Split each line into fields exactly as parse_line does, one CSV reader for the whole batch.

    Creating a reader per line costs more than the parsing itself. A record that spans several
    lines or fails sends its first line through parse_line alone, and reading resumes after it.
    """
    out: list[list[str] | MalformedRow] = []
    while len(out) < len(texts):
        reader = csv.reader(itertools.islice(texts, len(out), None), strict=True)
        done = len(out)
        try:
            for row in reader:
                if reader.line_num != len(out) - done + 1:
                    raise _Desync
                out.append(row)
            if len(out) == done:
                raise _Desync  # never expected; guarantees progress
        except (csv.Error, _Desync):
            try:
                out.append(parse_line(texts[len(out)]))
            except MalformedRow as error:
                out.append(error)
    return out


def _index(layout: Sequence[str], name: str) -> int | None:
    return layout.index(name) if name in layout else None


class LineParser:
    """Turn Master.csv lines into CSV-sourced NewCdr rows.

    `gmt_zone`: the file was written with cdr.conf `[csv] usegmtime = yes` (CDR_BACKFILL_CSV_GMT),
    so its StartTime/AnswerTime/EndTime are UTC while the AMI event of the same CDR carries the
    PBX's local time. They are converted to this zone (ASTERISK_TZ) before anything else: the
    identity, the date cut and the stored headers all see what AMI would have sent.
    """

    def __init__(
        self, layout: Sequence[str], cutoff: str | None = None, *, gmt_zone: tzinfo | None = None
    ) -> None:
        self.layout = tuple(layout)
        self.cutoff = cutoff
        self.gmt_zone = gmt_zone
        self._times = [self.layout.index(name) for name in TIME_FIELDS if name in self.layout]
        # Column numbers of the identity fields: hashing straight from the row skips a dict per line.
        self._canonical = [self.layout.index(name) for name in CANONICAL_FIELDS if name in self.layout]
        self._complete = len(self._canonical) == len(CANONICAL_FIELDS)
        self._start = _index(self.layout, "StartTime")
        self._uniqueid = _index(self.layout, "UniqueID")
        self._linkedid = _index(self.layout, "LinkedID")

    def _identity(self, row: list[str], headers: Headers) -> str:
        if self._complete:
            return identity_of_values([row[i].strip() for i in self._canonical])
        return canonical_identity(headers)

    def _fields(self, raw: bytes | None, split: list[str] | MalformedRow) -> tuple[list[str], Headers]:
        """The row and its named headers; raise MalformedRow if the line is not a CDR."""
        if raw is None:
            raise MalformedRow(TOO_LONG)
        if isinstance(split, MalformedRow):
            raise split
        if self.gmt_zone is not None and len(split) == len(self.layout):
            self._to_local(split, self.gmt_zone)
        return split, row_headers(split, self.layout)

    def _to_local(self, row: list[str], zone: tzinfo) -> None:
        """Rewrite the row's UTC times as local times, in place; a value that is no time is left for
        row_headers to refuse."""
        for index in self._times:
            local = utc_to_local_text(row[index], zone)
            if local is not None:
                row[index] = local

    def identity(self, raw: bytes | None) -> str | None:
        """The identity of a line, or None for a blank or malformed line."""
        if raw is None or not raw.strip():
            return None
        text = decode(raw)
        try:
            row, headers = self._fields(raw, split_lines([text])[0])
        except MalformedRow:
            return None
        return self._identity(row, headers)

    def remember(self, lines: Iterable[bytes | None], window: OccurrenceWindow) -> None:
        """Replay lines already consumed into the window (resuming in the middle of a file)."""
        for raw in lines:
            window.push(self.identity(raw))

    def parse(
        self,
        lines: Sequence[bytes | None],
        first_line: int,
        window: OccurrenceWindow,
        received_at: str,
    ) -> ParsedLines:
        """Parse consecutive lines (numbered from first_line), numbering occurrences in window."""
        result = ParsedLines()
        splits = split_lines(["" if raw is None else decode(raw) for raw in lines])
        for number, raw, split in zip(itertools.count(first_line), lines, splits, strict=False):
            if raw is not None and not raw.strip():
                window.push(None)  # a blank line is no CDR, and no mistake either
                result.skipped += 1
                continue
            try:
                row, headers = self._fields(raw, split)
            except MalformedRow as error:
                window.push(None)
                result.malformed.append(Malformed(number, str(error)))
                continue
            identity = self._identity(row, headers)
            occurrence = window.push(identity)
            if self.cutoff is not None and self._start is not None and row[self._start] < self.cutoff:
                result.skipped += 1
                continue
            result.rows.append(self._row(row, headers, identity, occurrence, received_at))
        return result

    def _row(
        self, row: list[str], headers: Headers, identity: str, occurrence: int, received_at: str
    ) -> NewCdr:
        return NewCdr(
            headers=headers,
            received_at=received_at,
            identity=identity,
            fingerprint=None,
            uniqueid=row[self._uniqueid] if self._uniqueid is not None else "",
            linkedid=(row[self._linkedid] or None) if self._linkedid is not None else None,
            source="csv",
            occurrence=occurrence,
        )
