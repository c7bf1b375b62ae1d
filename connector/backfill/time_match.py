"""Is a Master.csv row the AMI CDR of the same call with its times shifted by whole hours?

A wrong CDR_BACKFILL_CSV_GMT (cdr.conf `[csv] usegmtime`) or ASTERISK_TZ leaves every field of a
CSV row equal to its AMI twin but the three times, all off by the same number of hours. The
identity hashes the times as text, so such a row looks like a CDR the outbox has not seen, and
storing it would deliver the CDR a second time. `time_shift` is the pure decision, `advice` the
fix to print, `compare_rows` the verdict over many rows; `compare_recent` and
`recent_time_verdict` run it on the last lines of the file against the outbox (for
`connector check`).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from connector.backfill.lines import TIME_FIELDS, LineParser, OccurrenceWindow, check_layout
from connector.backfill.tail import CHUNK_BYTES, lines_before
from connector.backfill.twins import AmiCdr, AmiTwins
from connector.cdr.identity import CANONICAL_FIELDS, first_wins
from connector.cdr.times import resolve_zone
from connector.outbox.records import NewCdr

if TYPE_CHECKING:
    from connector.config import Settings

HOUR = timedelta(hours=1)
# UTC offsets run from -12 h to +14 h: no mistaken zone can shift a time by more than this.
MAX_SHIFT = timedelta(hours=26)
RECENT_LINES = 200
_CDR_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_COMPARED = tuple(name for name in CANONICAL_FIELDS if name not in TIME_FIELDS)


def parse_time(value: str) -> datetime | None:
    """A CDR time (`YYYY-MM-DD HH:MM:SS`) as a naive datetime; None if it is not one."""
    value = value.strip()
    if _CDR_TIME.fullmatch(value) is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:  # 2026-02-30
        return None


def _zone_offset(zone: tzinfo, at: datetime) -> timedelta:
    return zone.utcoffset(at.replace(fold=0)) or timedelta(0)


def _same_shift(csv: Mapping[str, str], ami: Mapping[str, str]) -> timedelta | None:
    """The one amount by which every time of csv differs from ami's; None if they do not agree."""
    shifts = set()
    for name in TIME_FIELDS:
        ours, theirs = csv.get(name, "").strip(), ami.get(name, "").strip()
        if not ours and not theirs:
            continue  # an unanswered CDR has no AnswerTime on either side
        ours_at, theirs_at = parse_time(ours), parse_time(theirs)
        if ours_at is None or theirs_at is None:
            return None
        shifts.add(ours_at - theirs_at)
    return shifts.pop() if len(shifts) == 1 else None


def time_shift(
    csv: Mapping[str, str], ami: Mapping[str, str], zone: tzinfo | None = None
) -> timedelta | None:
    """How far a CSV row's times are from an AMI row's, when the two are one CDR with shifted times.

    Both rows are given by AMI header name (a CSV row as LineParser names it, times converted or
    not). The answer is csv - ami, never zero, when every identity field but the times is equal
    (values trimmed), the Sequence is equal where both carry one, AnswerTime is empty in both or in
    neither, and StartTime, AnswerTime and EndTime all differ by the same amount: a whole number
    of hours up to 26, or exactly the UTC offset `zone` (ASTERISK_TZ) has at the AMI StartTime
    (zones such as Asia/Kolkata are off by half hours). Otherwise None: the rows agree (same
    times) or are two different CDRs. Identical times are the caller's "agree", not a shift.
    """
    if any(csv.get(name, "").strip() != ami.get(name, "").strip() for name in _COMPARED):
        return None
    ours, theirs = csv.get("Sequence", "").strip(), ami.get("Sequence", "").strip()
    if ours and theirs and ours != theirs:
        return None
    shift = _same_shift(csv, ami)
    if shift is None or not shift or abs(shift) > MAX_SHIFT:
        return None
    if shift % HOUR == timedelta(0):
        return shift
    start = parse_time(ami.get("StartTime", ""))
    if zone is not None and start is not None and abs(shift) == abs(_zone_offset(zone, start)):
        return shift
    return None


@dataclass(frozen=True)
class FixNames:
    """How the fix is spelled to the reader: environment variables, or `connector backfill` options."""

    gmt_on: str
    gmt_off: str
    zone: str


ENV_NAMES = FixNames("set CDR_BACKFILL_CSV_GMT=true", "set CDR_BACKFILL_CSV_GMT=false", "ASTERISK_TZ")
CLI_NAMES = FixNames(
    "add --gmt (CDR_BACKFILL_CSV_GMT=true for `connector run`)",
    "leave out --gmt (CDR_BACKFILL_CSV_GMT=false for `connector run`)",
    "--tz",
)


def _hours(shift: timedelta) -> str:
    hours = abs(shift) / HOUR
    return f"{hours:g} h"


def describe_shift(shift: timedelta) -> str:
    """`5 h later` / `5 h earlier`: the CSV times relative to the AMI ones."""
    return f"{_hours(shift)} {'later' if shift > timedelta(0) else 'earlier'}"


def advice(shift: timedelta, *, gmt: bool, zone: tzinfo, at: datetime, names: FixNames = ENV_NAMES) -> str:
    """The fix for CSV times `shift` away from AMI's (csv - ami, the CSV side as compared).

    `gmt` is the CDR_BACKFILL_CSV_GMT in use, `zone` the ASTERISK_TZ zone, `at` an AMI StartTime
    (local), where the zone's offset is taken.
    """
    offset = _zone_offset(zone, at)
    zone_name = str(getattr(zone, "key", zone))
    if not gmt:
        fix = (
            f"Asterisk writes this file's times in UTC (cdr.conf [csv] usegmtime = yes) while AMI "
            f"carries local times: {names.gmt_on}"
        )
        if shift != -offset:
            fix += f", and set {names.zone} to the PBX's time zone (now {zone_name})"
        return fix
    if shift == offset:
        return (
            f"this file's times are already local (cdr.conf [csv] usegmtime = no, the default): "
            f"{names.gmt_off}"
        )
    return (
        f"the file's UTC times (cdr.conf [csv] usegmtime = yes) are converted to {names.zone} = "
        f"{zone_name}, which is not the PBX's time zone: set {names.zone} to the zone Asterisk runs in"
    )


class Agreement(StrEnum):
    """What recent CSV rows say about the settings, compared with the AMI CDRs stored for them."""

    AGREE = "agree"
    """Rows found their AMI twins: the times are read right."""
    SHIFTED = "shifted"
    """Rows match AMI CDRs but for times shifted by whole hours: a setting is wrong."""
    NOTHING = "nothing comparable"
    """No row's UniqueID has an AMI CDR in the outbox (new file, AMI down, purged rows)."""


@dataclass(frozen=True)
class TimeVerdict:
    """The comparison of CSV rows with the AMI CDRs stored under their UniqueIDs."""

    agreement: Agreement
    compared: int  # CSV rows whose UniqueID has AMI CDRs in the outbox
    agreeing: int  # ... of which one has the row's identity
    shifted: int  # ... of which one matches but for the times (time_shift)
    shift: timedelta | None = None  # the most common shift (csv - ami), when shifted
    advice: str = ""  # the fix, when shifted

    @property
    def hours(self) -> float | None:
        """The shift in hours (csv - ami), when shifted."""
        return None if self.shift is None else self.shift / HOUR


def compare_rows(
    rows: Sequence[NewCdr],
    ami: Mapping[str, Sequence[AmiCdr]],
    *,
    gmt: bool,
    zone: tzinfo,
    names: FixNames = ENV_NAMES,
) -> TimeVerdict:
    """Compare parsed CSV rows with the AMI CDRs stored for their UniqueIDs (pure)."""
    compared = agreeing = 0
    shifts: Counter[timedelta] = Counter()
    sample: dict[timedelta, datetime] = {}
    for row in rows:
        twins = ami.get(row.uniqueid, ())
        if not twins:
            continue
        compared += 1
        if any(twin.identity == row.identity for twin in twins):
            agreeing += 1
            continue
        fields = first_wins(row.headers)
        for twin in twins:
            shift = time_shift(fields, twin.fields, zone)
            if shift is not None:
                shifts[shift] += 1
                sample.setdefault(shift, parse_time(twin.fields.get("StartTime", "")) or datetime(1970, 1, 1))
                break
    if shifts:
        shift, _ = shifts.most_common(1)[0]
        fix = advice(shift, gmt=gmt, zone=zone, at=sample[shift], names=names)
        return TimeVerdict(Agreement.SHIFTED, compared, agreeing, shifts.total(), shift, fix)
    return TimeVerdict(Agreement.AGREE if agreeing else Agreement.NOTHING, compared, agreeing, 0)


def _last_line_end(handle: BinaryIO) -> int:
    """The offset just after the file's last LF (0 if it has none): a line still being written is
    left out."""
    end = handle.seek(0, 2)
    while end > 0:
        start = max(0, end - CHUNK_BYTES)
        handle.seek(start)
        cut = handle.read(end - start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def last_rows(csv_path: Path, parser: LineParser, lines: int) -> list[NewCdr]:
    """The CDR rows of the file's last `lines` complete lines (blocking)."""
    with csv_path.open("rb") as handle:
        raw = lines_before(handle, _last_line_end(handle), lines)
    return parser.parse(raw, 1, OccurrenceWindow(), "").rows


def compare_recent(
    csv_path: Path,
    layout: Sequence[str],
    outbox_path: Path,
    *,
    gmt: bool,
    zone: tzinfo,
    lines: int = RECENT_LINES,
) -> TimeVerdict:
    """Compare the file's last `lines` lines with the AMI CDRs of the outbox (blocking: run it in a
    thread). Raises OSError if the file cannot be read, OutboxError if the outbox cannot."""
    parser = LineParser(layout, gmt_zone=zone if gmt else None)
    rows = last_rows(csv_path, parser, lines)
    twins = AmiTwins(outbox_path)
    try:
        ami = twins.ami_cdrs(sorted({row.uniqueid for row in rows}))
    finally:
        twins.close()
    return compare_rows(rows, ami, gmt=gmt, zone=zone)


def recent_time_verdict(settings: Settings, *, lines: int = RECENT_LINES) -> TimeVerdict | None:
    """compare_recent with CDR_BACKFILL_CSV, _COLUMNS, _CSV_GMT and ASTERISK_TZ; None when the
    follower is off. Raises ValueError for a bad CDR_BACKFILL_COLUMNS, OSError, OutboxError."""
    path = settings.cdr_backfill_csv.strip()
    if not path:
        return None
    return compare_recent(
        Path(path),
        check_layout(settings.cdr_backfill_columns),
        settings.outbox_path,
        gmt=settings.cdr_backfill_csv_gmt,
        zone=resolve_zone(settings.asterisk_tz),
        lines=lines,
    )
