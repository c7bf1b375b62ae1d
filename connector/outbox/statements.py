"""The statements the store runs to append rows and to read due ones, spelled with outbox.names."""

from __future__ import annotations

from connector.outbox.names import CDR_TABLE, CSV_POSITION_TABLE, PENDING, PENDING_INDEX, RECORDING_TABLE
from connector.outbox.records import Kind

# Rows already stored under the identities of a batch, found through the dedupe_key index: every
# key of an identity lies between 'identity#' and 'identity$' ('$' sorts right after '#').
KNOWN_IDENTITIES_SQL = f"""
SELECT c.dedupe_key, c.fingerprint
  FROM json_each(?) AS j
  JOIN {CDR_TABLE} AS c ON c.dedupe_key >= j.value || '#' AND c.dedupe_key < j.value || '$'
"""

INSERT_CDR_SQL = f"""
INSERT INTO {CDR_TABLE} (received_at, dedupe_key, identity, fingerprint, source, uniqueid, linkedid, raw,
                 state, attempts, next_attempt_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, {PENDING}, 0, ?1, ?1)
ON CONFLICT (dedupe_key) DO NOTHING
"""

# An AMI frame whose CDR was read from Master.csv first adopts that row: the row learns the frame's
# fingerprint (so a later ForkCDR twin gets the next number), counts as received over AMI rather
# than recovered, and, unless already sent, carries the frame's headers.
ADOPT_CDR_SQL = f"""
UPDATE {CDR_TABLE} SET fingerprint = ?4, source = ?5, linkedid = coalesce(linkedid, ?7),
               raw = CASE WHEN state = {PENDING} THEN ?8 ELSE raw END
 WHERE dedupe_key = ?2 AND fingerprint IS NULL
"""

APPEND_RECORDING_SQL = f"""
INSERT OR IGNORE INTO {RECORDING_TABLE} (path, size, mtime, sha256, detected_at, uniqueid, linkedid,
                                 state, attempts, next_attempt_at, updated_at)
VALUES (:path, :size, :mtime, :sha256, :detected_at, :uniqueid, :linkedid,
        {PENDING}, 0, :detected_at, :detected_at)
"""

SAVE_POSITION_SQL = f"""
INSERT INTO {CSV_POSITION_TABLE} (path, inode, offset, line, updated_at)
VALUES (:path, :inode, :offset, :line, :now)
ON CONFLICT (path) DO UPDATE SET inode = excluded.inode, offset = excluded.offset,
                                 line = excluded.line, updated_at = excluded.updated_at
"""

TIME_COLUMN = {Kind.CDR: "received_at", Kind.RECORDING: "detected_at"}


def due_sql(kind: Kind, columns: str) -> str:
    """Select `columns` of due pending rows, oldest first, but those in :exclude (a JSON array).

    The partial index holds pending rows only, so it stays small and cached however many sent rows
    pile up; naming it keeps the planner from ever scanning the table instead.
    """
    return (
        f"SELECT {columns} FROM {kind.value} INDEXED BY {PENDING_INDEX[kind]}"
        f" WHERE state = {PENDING} AND next_attempt_at <= :now"
        " AND id NOT IN (SELECT value FROM json_each(:exclude)) ORDER BY id LIMIT :limit"
    )
