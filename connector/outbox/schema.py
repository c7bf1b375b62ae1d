"""The outbox schema: the one definition that migrations are checked against and the runtime uses.

Every storage name (tables, views, states) lives here. tests/outbox/test_migrations.py asserts
that the migrated database matches these tables exactly: a change here without a migration fails.
"""

from __future__ import annotations

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

from connector.outbox.records import State

metadata = MetaData()

STATES_SQL = ", ".join(f"'{state.value}'" for state in State)

CDR_TABLE = "cdr"
RECORDING_TABLE = "recording"
CSV_POSITION_TABLE = "csv_position"
BACKLOG_VIEW = "backlog"
FAILED_VIEW = "failed"

cdr = Table(
    CDR_TABLE,
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("received_at", Text, nullable=False),
    # identity + '#' + occurrence: equal for the same CDR whichever way it reached us (DESIGN.md).
    Column("dedupe_key", Text, nullable=False, unique=True),
    Column("identity", Text, nullable=False),
    # Hash of the whole AMI frame that delivered this CDR; NULL while only a CSV line has been seen.
    Column("fingerprint", Text),
    Column("source", Text, nullable=False, server_default="ami"),
    Column("uniqueid", Text, nullable=False),
    Column("linkedid", Text),
    # JSON array of [header, value] pairs, exactly as received and in order.
    Column("raw", Text, nullable=False),
    Column("state", Text, nullable=False, server_default=State.PENDING.value),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Text, nullable=False),
    Column("last_error", Text),
    Column("filter_reason", Text),
    Column("sent_at", Text),
    Column("updated_at", Text, nullable=False),
    CheckConstraint(f"state IN ({STATES_SQL})", name="ck_cdr_state"),
    # Ids are never reused, even after `connector purge`: an id in a log line or a `resend --id`
    # always means the same row.
    sqlite_autoincrement=True,
)
# The claim query walks pending rows oldest first; a partial index keeps that cost independent of
# how many sent rows the table holds.
Index("ix_cdr_pending", cdr.c.id, sqlite_where=text("state = 'pending'"))
Index("ix_cdr_uniqueid", cdr.c.uniqueid)
Index("ix_cdr_linkedid", cdr.c.linkedid)
# Failed rows are few: a partial index serves `failed` and resend without costing every insert.
Index("ix_cdr_failed", cdr.c.updated_at, sqlite_where=text("state = 'failed'"))

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
    Column("state", Text, nullable=False, server_default=State.PENDING.value),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Text, nullable=False),
    Column("last_error", Text),
    Column("filter_reason", Text),
    Column("sent_at", Text),
    Column("deleted_at", Text),
    Column("updated_at", Text, nullable=False),
    UniqueConstraint("path", "size", "mtime", name="uq_recording_file"),
    CheckConstraint(f"state IN ({STATES_SQL})", name="ck_recording_state"),
    sqlite_autoincrement=True,
)
Index("ix_recording_pending", recording.c.id, sqlite_where=text("state = 'pending'"))
Index("ix_recording_uniqueid", recording.c.uniqueid)
Index("ix_recording_failed", recording.c.updated_at, sqlite_where=text("state = 'failed'"))

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

TABLES = {CDR_TABLE: cdr, RECORDING_TABLE: recording, CSV_POSITION_TABLE: csv_position}
