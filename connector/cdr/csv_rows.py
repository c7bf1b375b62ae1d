"""Master.csv rows (cdr_csv or cdr_custom) → headers named as in the AMI Cdr event."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence

from connector.outbox.records import Headers

# CDR variable name (as in ${CDR(name)} and cdr_manager.conf [mappings]) → AMI Cdr header name.
CDR_FIELD_HEADERS: dict[str, str] = {
    "accountcode": "AccountCode",
    "src": "Source",
    "dst": "Destination",
    "dcontext": "DestinationContext",
    "clid": "CallerID",
    "channel": "Channel",
    "dstchannel": "DestinationChannel",
    "lastapp": "LastApplication",
    "lastdata": "LastData",
    "start": "StartTime",
    "answer": "AnswerTime",
    "end": "EndTime",
    "duration": "Duration",
    "billsec": "BillableSeconds",
    "disposition": "Disposition",
    "amaflags": "AMAFlags",
    "uniqueid": "UniqueID",
    "userfield": "UserField",
    # Not in the default event; these are the header names the README's [mappings] recommend.
    "linkedid": "LinkedID",
    "sequence": "Sequence",
    "peeraccount": "PeerAccount",
    "recordingfile": "RecordingFile",
}

# cdr_csv's columns with loguniqueid=yes and loguserfield=yes (cdr.conf [csv]).
CSV_LAYOUT_FIELDS: tuple[str, ...] = (
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "uniqueid",
    "userfield",
)

# CDR_BACKFILL_COLUMNS presets: the layouts cdr_csv writes. With cdr.conf `[csv] newcdrcolumns =
# yes` it appends peeraccount, linkedid and sequence (sequence as a bare integer) to the 18 above.
LAYOUT_PRESETS: dict[str, tuple[str, ...]] = {
    "csv": CSV_LAYOUT_FIELDS,
    "csv-newcdrcolumns": (*CSV_LAYOUT_FIELDS, "peeraccount", "linkedid", "sequence"),
}
PRESET_NAMES = ", ".join(LAYOUT_PRESETS)

_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
_REQUIRED_TIMES = ("StartTime", "EndTime")


class MalformedRow(ValueError):
    """A Master.csv line that cannot be a CDR of the configured layout."""


def parse_layout(spec: str) -> tuple[str, ...]:
    """Turn CDR_BACKFILL_COLUMNS (a preset, or a comma list of CDR field names) into header names.

    The presets are LAYOUT_PRESETS' names (`csv`, `csv-newcdrcolumns`). A custom item is a CDR
    variable name (`clid`, `linkedid`, ...) or `name=Header` to choose the header name of a field
    this module does not know (e.g. `mycode=MyCode`).
    """
    items = [item.strip() for item in spec.split(",") if item.strip()]
    if len(items) == 1 and items[0].lower() in LAYOUT_PRESETS:
        items = list(LAYOUT_PRESETS[items[0].lower()])
    if not items:
        raise ValueError(f"the column layout is empty; use {PRESET_NAMES} or a comma list of CDR fields")
    headers: list[str] = []
    for item in items:
        name, sep, header = item.partition("=")
        header = header.strip() if sep else CDR_FIELD_HEADERS.get(name.strip().lower(), "")
        if not header:
            known = ", ".join(CDR_FIELD_HEADERS)
            raise ValueError(
                f"unknown CDR field {item!r}; use a preset ({PRESET_NAMES}) or a comma list of "
                f"{known} or name=Header"
            )
        if header in headers:
            raise ValueError(f"column {item!r} appears twice in the layout")
        headers.append(header)
    return tuple(headers)


def parse_line(line: str) -> list[str]:
    """Split one Master.csv line (without its line end) into fields, refusing bad quoting."""
    try:
        rows = list(csv.reader([line], strict=True))
    except csv.Error as error:
        raise MalformedRow(f"bad quoting: {error}") from None
    if len(rows) != 1:
        raise MalformedRow("not exactly one CSV record")
    return rows[0]


def row_headers(row: Sequence[str], layout: Sequence[str]) -> Headers:
    """Name a Master.csv row's values with AMI header names, checking column count and times."""
    if len(row) != len(layout):
        raise MalformedRow(f"{len(row)} columns, the layout has {len(layout)}")
    headers = tuple(zip(layout, row, strict=True))
    values = dict(headers)
    for name in _REQUIRED_TIMES:
        if name in values and not _TIME.fullmatch(values[name]):
            raise MalformedRow(f"{name} {values[name]!r} is not YYYY-MM-DD HH:MM:SS")
    answer = values.get("AnswerTime", "")
    if answer and not _TIME.fullmatch(answer):
        raise MalformedRow(f"AnswerTime {answer!r} is not YYYY-MM-DD HH:MM:SS")
    return headers
