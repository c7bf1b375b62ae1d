"""CDR table rows made from real AMI Cdr events, written as FreePBX's cdr_adaptive_odbc or
cdr_pgsql would write them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from connector.cdr.identity import first_wins
from connector.outbox.records import Headers
from tests.db.conftest import CdrDatabase

_COMMON = {
    "clid": "CallerID",
    "src": "Source",
    "dst": "Destination",
    "dcontext": "DestinationContext",
    "channel": "Channel",
    "dstchannel": "DestinationChannel",
    "lastapp": "LastApplication",
    "lastdata": "LastData",
    "duration": "Duration",
    "billsec": "BillableSeconds",
    "disposition": "Disposition",
    "accountcode": "AccountCode",
    "uniqueid": "UniqueID",
    "userfield": "UserField",
    "linkedid": "LinkedID",
    "sequence": "Sequence",
    "peeraccount": "PeerAccount",
}
AMA_NUMBER = {"OMIT": 1, "BILLING": 2, "DOCUMENTATION": 3}
TIME = "%Y-%m-%d %H:%M:%S"


def table_row(headers: Headers, schema: str) -> dict[str, object]:
    """The row the database backend writes for this CDR."""
    fields = first_wins(headers)
    row: dict[str, object] = {column: fields.get(header, "") for column, header in _COMMON.items()}
    row["duration"], row["billsec"] = int(fields["Duration"]), int(fields["BillableSeconds"])
    row["sequence"] = int(fields.get("Sequence") or 0)
    if schema == "freepbx":
        row["calldate"] = fields["StartTime"]
        row["amaflags"] = AMA_NUMBER.get(fields.get("AMAFlags", ""), 0)
        row["recordingfile"] = fields.get("RecordingFile", "")
        row["did"] = fields.get("Destination", "")
    else:
        row["start"] = fields["StartTime"]
        row["answer"] = fields.get("AnswerTime") or None
        row["end"] = fields["EndTime"]
        row["amaflags"] = fields.get("AMAFlags", "")
    return row


def shifted(headers: Headers, by: timedelta, uniqueid: str | None = None) -> Headers:
    """The same CDR moved in time (and, given `uniqueid`, under another UniqueID)."""
    moved = []
    for name, value in headers:
        if name in ("StartTime", "AnswerTime", "EndTime") and value:
            value = (datetime.strptime(value, TIME) + by).strftime(TIME)
        if name == "UniqueID" and uniqueid is not None:
            value = uniqueid
        moved.append((name, value))
    return tuple(moved)


def _literal(value: object, mysql: bool) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    text = str(value).replace("\\", "\\\\") if mysql else str(value)  # PostgreSQL: standard strings
    return "'" + text.replace("'", "''") + "'"


def insert(database: CdrDatabase, cdrs: Sequence[Headers]) -> None:
    """Write these CDRs into the table, in this order, as the backend does when each one ends."""
    for start in range(0, len(cdrs), 500):
        rows = [table_row(headers, database.schema) for headers in cdrs[start : start + 500]]
        columns = list(rows[0])
        quote = "`" if database.schema == "freepbx" else '"'
        names = ", ".join(f"{quote}{column}{quote}" for column in columns)
        values = ", ".join(
            "(" + ", ".join(_literal(row[c], database.schema == "freepbx") for c in columns) + ")"
            for row in rows
        )
        database.sql(f"INSERT INTO cdr ({names}) VALUES {values};")
