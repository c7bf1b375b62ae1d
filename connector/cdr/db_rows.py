"""A row of the CDR database (FreePBX's asteriskcdrdb.cdr, cdr_pgsql's cdr) → headers named as in the
AMI Cdr event of the same CDR. Pure.

The two tables differ in what they hold: FreePBX's has `calldate` (the start) and `duration` but no
answer or end column, an integer `amaflags`, and extra columns of its own (`did`, `recordingfile`,
`cnum`, ...); cdr_pgsql's has `start`, `answer` and `end`. A header the table does not hold is
either left out or, for FreePBX's EndTime and AnswerTime, derived from the start and the durations
(to the second, as the API expects them). Derived headers are listed in `DbRecord.derived` and are
never used to recognise a CDR: derived values are not exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from decimal import Decimal
from typing import Any

from connector.cdr.csv_rows import CDR_FIELD_HEADERS
from connector.outbox.records import Headers

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# The order of the AMI Cdr event (cdr_manager), then the [mappings] README recommends: the order
# CDR_FIELD_HEADERS names them in.
EVENT_ORDER: tuple[str, ...] = tuple(CDR_FIELD_HEADERS)
# FreePBX names the start `calldate`.
START_COLUMNS = ("start", "calldate")
TIME_COLUMNS = frozenset({"start", "calldate", "answer", "end"})

# ast_channel_amaflags2string: the text the AMI event carries for FreePBX's integer column.
AMA_FLAGS = {"0": "Unknown", "1": "OMIT", "2": "BILLING", "3": "DOCUMENTATION"}
# ast_cdr_disp2str, for a disposition stored as its number (an integer column).
DISPOSITIONS = {
    "0": "NO ANSWER",
    "1": "NO ANSWER",
    "2": "FAILED",
    "4": "BUSY",
    "8": "ANSWERED",
    "16": "CONGESTION",
}


@dataclass(frozen=True)
class DbRecord:
    """One table row as AMI headers; `derived` names the headers computed rather than read."""

    headers: Headers
    end: datetime  # the CDR's end (read, or start + duration): what the read position follows
    derived: frozenset[str] = frozenset()

    @property
    def own(self) -> dict[str, str]:
        """The headers read from the table (derived ones left out), by name."""
        return {name: value for name, value in self.headers if name not in self.derived}


def local_time(value: Any, zone: tzinfo) -> datetime | None:
    """A time column as the PBX's naive local time, to the second (a timestamptz is converted to zone)."""
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is not None:
        value = value.astimezone(zone).replace(tzinfo=None)
    moment: datetime = value.replace(microsecond=0)
    return moment


def time_text(value: datetime | None) -> str:
    """`YYYY-MM-DD HH:MM:SS`, as the AMI event writes times; '' for no time."""
    return value.strftime(TIME_FORMAT) if value is not None else ""


def value_text(value: Any) -> str:
    """A column's value as AMI text (NULL is '', numbers without a fraction part as integers)."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Decimal | float) and value == int(value):
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat(sep=" ") if isinstance(value, datetime) else value.isoformat()
    return str(value)


def _number(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _times(row: Mapping[str, Any], zone: tzinfo) -> tuple[dict[str, str], datetime | None, frozenset[str]]:
    """StartTime, AnswerTime, EndTime as text; the end as a time; which of them were derived."""
    start_column = next((name for name in START_COLUMNS if name in row), None)
    start = local_time(row.get(start_column), zone) if start_column else None
    texts = {"StartTime": time_text(start)}
    if "end" in row:
        end = local_time(row.get("end"), zone)
        texts["EndTime"] = time_text(end)
        if "answer" in row:
            texts["AnswerTime"] = time_text(local_time(row.get("answer"), zone))
        return texts, end, frozenset()
    if start is None:
        return texts, None, frozenset()
    end = start + timedelta(seconds=_number(row.get("duration")))
    billsec = _number(row.get("billsec"))
    texts["EndTime"] = time_text(end)
    texts["AnswerTime"] = time_text(end - timedelta(seconds=billsec)) if billsec else ""
    return texts, end, frozenset({"EndTime", "AnswerTime"})


def db_record(row: Mapping[str, Any], zone: tzinfo) -> DbRecord | None:
    """Map a row (column names in lower case) to AMI headers; None when it has no readable time.

    The known columns come first, in the AMI event's order, under the AMI header names; every other
    column follows under its own name (FreePBX's did, cnum, cnam, outbound_cnum, dst_cnam, ...).
    A numeric amaflags or disposition becomes the text AMI sends.
    """
    times, end, derived = _times(row, zone)
    if end is None:
        return None
    headers: list[tuple[str, str]] = []
    for column in EVENT_ORDER:
        header = CDR_FIELD_HEADERS[column]
        if header in times:
            headers.append((header, times[header]))
        elif column in row:
            text = value_text(row[column]).strip()
            if column == "amaflags":
                text = AMA_FLAGS.get(text, text)
            elif column == "disposition":
                text = DISPOSITIONS.get(text, text)
            elif column == "sequence" and text == "0" and not value_text(row.get("linkedid")).strip():
                continue  # FreePBX's default when cdr_adaptive_odbc maps no sequence: not a Sequence
            headers.append((header, text))
    known = {*EVENT_ORDER, *START_COLUMNS}
    headers += [(column, value_text(value)) for column, value in row.items() if column not in known]
    return DbRecord(tuple(headers), end, derived)
