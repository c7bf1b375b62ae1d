"""Storage names: the one definition of the outbox's tables, views and indexes, and of states in SQL.

schema.py (the table definitions) and store.py (the run-time SQL) both take their names from here;
this module imports no SQLAlchemy, so a running connector never loads it. A Kind's value is its
table's name and a State's value is what the `state` column holds. The migrations in
migrations/versions keep their own literal copies on purpose: they are frozen history.
"""

from __future__ import annotations

from connector.outbox.records import Kind, State

CDR_TABLE = Kind.CDR.value
# Each CDR's raw headers, apart: a state change then rewrites a narrow row, never the headers.
CDR_RAW_TABLE = "cdr_raw"
CDR_RAW_DELETE_TRIGGER = "cdr_raw_follows_delete"
RECORDING_TABLE = Kind.RECORDING.value
CSV_POSITION_TABLE = "csv_position"
DB_POSITION_TABLE = "db_position"
BACKLOG_VIEW = "backlog"
FAILED_VIEW = "failed"
# The public interface for operators with sqlite3 (README, "Inspecting the outbox with sqlite3").
CDRS_VIEW = "cdrs"
RECORDINGS_VIEW = "recordings"
# A CDR with its raw headers, for the reads that need both (USING: `id` needs no table name).
RAW_JOIN = f"JOIN {CDR_RAW_TABLE} USING (id)"
CDR_WITH_RAW = f"{CDR_TABLE} {RAW_JOIN}"

# Partial indexes of pending rows: the due reads name them (INDEXED BY).
PENDING_INDEX = {Kind.CDR: "ix_cdr_pending", Kind.RECORDING: "ix_recording_pending"}
FAILED_INDEX = {Kind.CDR: "ix_cdr_failed", Kind.RECORDING: "ix_recording_failed"}
UNIQUEID_INDEX = {Kind.CDR: "ix_cdr_uniqueid", Kind.RECORDING: "ix_recording_uniqueid"}
CDR_LINKEDID_INDEX = "ix_cdr_linkedid"
# Each CDR's RecordingFile header (FreePBX's CDR(recordingfile)), for linking a recording whose name
# carries no UniqueID: a partial expression index, used only by a query spelled with this very
# expression (SQLite matches an indexed expression textually).
RECORDING_FILE_SQL = "json_extract(raw, '$.RecordingFile')"
CDR_RECORDING_FILE_INDEX = "ix_cdr_raw_recordingfile"
# Partial indexes of settled (sent, filtered) rows by settle time: retention deletes oldest first.
SETTLED_INDEX = {Kind.CDR: "ix_cdr_settled", Kind.RECORDING: "ix_recording_settled"}


def quoted(state: State) -> str:
    """Spell a state as an SQL string literal, for statements built from these names."""
    return f"'{state.value}'"


PENDING = quoted(State.PENDING)
SENT = quoted(State.SENT)
FILTERED = quoted(State.FILTERED)
FAILED = quoted(State.FAILED)
STATES_SQL = ", ".join(quoted(state) for state in State)
SETTLED_SQL = f"{SENT}, {FILTERED}"
