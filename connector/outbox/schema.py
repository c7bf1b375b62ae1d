"""The outbox schema: the one definition of the tables that migrations are checked against.

Storage names (tables, views, indexes, states) come from connector.outbox.names, which the
run-time store uses too; the migrations keep their own literal copies on purpose (frozen history).
tests/outbox/test_migrations.py asserts that the migrated database matches these tables exactly:
a change here without a migration fails.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from connector.outbox.names import (
    CDR_LINKEDID_INDEX,
    CDR_RAW_TABLE,
    CDR_RECORDING_FILE_INDEX,
    CDR_TABLE,
    CSV_POSITION_TABLE,
    DB_POSITION_TABLE,
    FAILED,
    FAILED_INDEX,
    PENDING,
    PENDING_INDEX,
    RECORDING_FILE_SQL,
    RECORDING_TABLE,
    SETTLED_INDEX,
    SETTLED_SQL,
    STATES_SQL,
    UNIQUEID_INDEX,
)
from connector.outbox.records import Kind, State

metadata = MetaData()


def delivery_columns() -> list[Column[Any]]:
    """The columns every deliverable row has: its state and its delivery attempts."""
    return [
        Column("state", Text, nullable=False, server_default=State.PENDING.value),
        Column("attempts", Integer, nullable=False, server_default="0"),
        Column("next_attempt_at", Text, nullable=False),
        Column("last_error", Text),
        Column("filter_reason", Text),
        Column("sent_at", Text),
    ]


cdr = Table(
    CDR_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", Text, nullable=False),
    # identity + '#' + occurrence: equal for the same CDR whichever way it reached us (README,
    # "CDR identity").
    Column("dedupe_key", Text, nullable=False, unique=True),
    Column("identity", Text, nullable=False),
    # Hash of the whole AMI frame that delivered this CDR; NULL while only a CSV line has been seen.
    Column("fingerprint", Text),
    Column("source", Text, nullable=False, server_default="ami"),
    Column("uniqueid", Text, nullable=False),
    Column("linkedid", Text),
    *delivery_columns(),
    Column("updated_at", Text, nullable=False),
    CheckConstraint(f"state IN ({STATES_SQL})", name="ck_cdr_state"),
    # Ids are never reused, even after `connector purge`: an id in a log line or a `resend --id`
    # always means the same row.
    sqlite_autoincrement=True,
)
# The due read walks pending rows oldest first; a partial index keeps that cost independent of
# how many sent rows the table holds.
Index(PENDING_INDEX[Kind.CDR], cdr.c.id, sqlite_where=text(f"state = {PENDING}"))
Index(UNIQUEID_INDEX[Kind.CDR], cdr.c.uniqueid)
Index(CDR_LINKEDID_INDEX, cdr.c.linkedid)
# Failed rows are few: a partial index serves `failed` and resend without costing every insert.
Index(FAILED_INDEX[Kind.CDR], cdr.c.updated_at, sqlite_where=text(f"state = {FAILED}"))
# Retention deletes settled rows oldest first without reading the pending and failed ones.
Index(SETTLED_INDEX[Kind.CDR], cdr.c.updated_at, sqlite_where=text(f"state IN ({SETTLED_SQL})"))

# The headers of each CDR, apart from its state (names.CDR_RAW_TABLE): one JSON object, every
# header in AMI order (connector.cdr.raw). A trigger deletes it with its cdr row.
cdr_raw = Table(
    CDR_RAW_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("raw", Text, nullable=False),
    # A recording whose name carries no UniqueID is linked through its CDR's RecordingFile header;
    # partial, since most CDRs have no recording.
    Index(
        CDR_RECORDING_FILE_INDEX,
        text(RECORDING_FILE_SQL),
        sqlite_where=text(f"{RECORDING_FILE_SQL} IS NOT NULL"),
    ),
)

recording = Table(
    RECORDING_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("path", Text, nullable=False),
    Column("size", Integer, nullable=False),
    Column("mtime", Float, nullable=False),
    Column("sha256", Text),
    Column("detected_at", Text, nullable=False),
    Column("uniqueid", Text),
    Column("linkedid", Text),
    *delivery_columns(),
    Column("deleted_at", Text),
    Column("updated_at", Text, nullable=False),
    UniqueConstraint("path", "size", "mtime", name="uq_recording_file"),
    CheckConstraint(f"state IN ({STATES_SQL})", name="ck_recording_state"),
    sqlite_autoincrement=True,
)
Index(PENDING_INDEX[Kind.RECORDING], recording.c.id, sqlite_where=text(f"state = {PENDING}"))
Index(UNIQUEID_INDEX[Kind.RECORDING], recording.c.uniqueid)
Index(FAILED_INDEX[Kind.RECORDING], recording.c.updated_at, sqlite_where=text(f"state = {FAILED}"))
Index(SETTLED_INDEX[Kind.RECORDING], recording.c.updated_at, sqlite_where=text(f"state IN ({SETTLED_SQL})"))

# Where the Master.csv follower has read up to; written in the same transaction as the rows read,
# so a crash can neither skip nor double-read a line.
csv_position = Table(
    CSV_POSITION_TABLE,
    metadata,
    Column("path", Text, primary_key=True),
    Column("inode", Integer, nullable=False),
    Column("offset", Integer, nullable=False),
    Column("line", Integer, nullable=False, server_default="0"),
    Column("updated_at", Text, nullable=False),
)

# Where the CDR database follower reads from next (an end time), per source; written in the same
# transaction as the rows read, like csv_position.
db_position = Table(
    DB_POSITION_TABLE,
    metadata,
    Column("source", Text, primary_key=True),
    Column("position", Text, nullable=False),
    Column("updated_at", Text, nullable=False),
)

TABLES = {
    CDR_TABLE: cdr,
    CDR_RAW_TABLE: cdr_raw,
    RECORDING_TABLE: recording,
    CSV_POSITION_TABLE: csv_position,
    DB_POSITION_TABLE: db_position,
}
