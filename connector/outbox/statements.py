"""The statements the store runs to append rows and to read due ones, spelled with outbox.names."""

from __future__ import annotations

from connector.outbox.names import (
    CDR_RAW_TABLE,
    CDR_TABLE,
    CDR_WITH_RAW,
    CSV_POSITION_TABLE,
    DB_POSITION_TABLE,
    PENDING,
    PENDING_INDEX,
    RECORDING_FILE_SQL,
    RECORDING_TABLE,
    SETTLED_INDEX,
    SETTLED_SQL,
)
from connector.outbox.records import Kind
from connector.outbox.rows import CDR_COLUMNS

# Rows already stored under the identities of a batch, found through the dedupe_key index: every
# key of an identity lies between 'identity#' and 'identity$' ('$' sorts right after '#').
KNOWN_IDENTITIES_SQL = f"""
SELECT c.dedupe_key, c.fingerprint
  FROM json_each(?) AS j
  JOIN {CDR_TABLE} AS c ON c.dedupe_key >= j.value || '#' AND c.dedupe_key < j.value || '$'
"""

# The append transaction gives new rows their ids (the next after sqlite_sequence's): the cdr row
# and its raw row are then two plain inserts, with no lookup between them.
NEXT_CDR_ID_SQL = f"SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = '{CDR_TABLE}'), 0) + 1"

INSERT_CDR_SQL = f"""
INSERT INTO {CDR_TABLE} (id, received_at, dedupe_key, identity, fingerprint, source, uniqueid, linkedid,
                 state, attempts, next_attempt_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, {PENDING}, 0, ?2, ?2)
"""

INSERT_CDR_RAW_SQL = f"INSERT INTO {CDR_RAW_TABLE} (id, raw) VALUES (?1, ?2)"

# An AMI frame whose CDR was read from Master.csv first adopts that row: the row learns the frame's
# fingerprint (so a later ForkCDR twin gets the next number), counts as received over AMI rather
# than recovered, and, unless already sent, carries the frame's headers. The raw update runs first:
# it finds the row by the fingerprint the second one fills in.
ADOPT_CDR_RAW_SQL = f"""
UPDATE {CDR_RAW_TABLE} SET raw = :raw
 WHERE id = (SELECT id FROM {CDR_TABLE} WHERE dedupe_key = :key AND fingerprint IS NULL AND state = {PENDING})
"""
ADOPT_CDR_SQL = f"""
UPDATE {CDR_TABLE} SET fingerprint = :fingerprint, source = :source, linkedid = coalesce(linkedid, :linkedid)
 WHERE dedupe_key = :key AND fingerprint IS NULL
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

SAVE_DB_POSITION_SQL = f"""
INSERT INTO {DB_POSITION_TABLE} (source, position, updated_at) VALUES (:source, :position, :now)
ON CONFLICT (source) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
"""

# `connector salvage`: rows read from another outbox, each stored in the state it had there (a
# pending one due at once), under an id of this outbox. A CDR's key comes from number_cdrs; a
# recording already here (same path, size and mtime) is left as it is.
INSERT_SALVAGED_CDR_SQL = f"""
INSERT INTO {CDR_TABLE} (id, received_at, dedupe_key, identity, fingerprint, source, uniqueid, linkedid,
                 state, attempts, next_attempt_at, last_error, filter_reason, sent_at, updated_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
"""

INSERT_SALVAGED_RECORDING_SQL = f"""
INSERT OR IGNORE INTO {RECORDING_TABLE} (path, size, mtime, sha256, detected_at, uniqueid, linkedid,
                                 state, attempts, next_attempt_at, last_error, filter_reason, sent_at,
                                 deleted_at, updated_at)
VALUES (:path, :size, :mtime, :sha256, :detected_at, :uniqueid, :linkedid, :state, :attempts,
        :next_attempt_at, :last_error, :filter_reason, :sent_at, :deleted_at, :updated_at)
"""

# A salvaged CSV position is kept only for a file this outbox has none for: the live follower's own
# position is newer (it read on after the damaged outbox stopped).
KEEP_POSITION_SQL = f"""
INSERT INTO {CSV_POSITION_TABLE} (path, inode, offset, line, updated_at)
VALUES (:path, :inode, :offset, :line, :now)
ON CONFLICT (path) DO NOTHING
"""

# The CDRs whose RecordingFile header is one of the names in ?1 (a JSON array): a recording without
# UniqueID finds its call this way. Spelled with names.RECORDING_FILE_SQL, the expression the
# partial index holds (SQLite matches it as written); `IN` implies the index's IS NOT NULL.
CDRS_BY_RECORDING_FILE_SQL = (
    f"SELECT {CDR_COLUMNS} FROM {CDR_WITH_RAW}"
    f" WHERE {RECORDING_FILE_SQL} IN (SELECT value FROM json_each(?1)) ORDER BY id"
)

TIME_COLUMN = {Kind.CDR: "received_at", Kind.RECORDING: "detected_at"}


def due_sql(kind: Kind, columns: str, join: str = "") -> str:
    """Select `columns` of due pending rows, oldest first, but those in :exclude (a JSON array).

    The partial index holds pending rows only, so it stays small and cached however many sent rows
    pile up; naming it keeps the planner from ever scanning the table instead. `join` adds a table
    joined USING (id), such as the CDRs' raw headers.
    """
    return (
        f"SELECT {columns} FROM {kind.value} INDEXED BY {PENDING_INDEX[kind]} {join}"
        f" WHERE state = {PENDING} AND next_attempt_at <= :now"
        " AND id NOT IN (SELECT value FROM json_each(:exclude)) ORDER BY id LIMIT :limit"
    )


# Retention deletes settled rows in chunks of this many: one chunk is one write transaction, and
# ingest waits for at most one. Each row touches its raw row and four indexes (two of them in random
# order): 100 rows take ~4 ms, 500 ~17 ms (bench/year_bench.py prints the longest).
SETTLED_CHUNK_ROWS = 100

# The outbox file's page figures, read from the database header (no table is scanned).
SPACE_SQL = (
    "SELECT page_count, freelist_count, page_size"
    " FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()"
)


def _settled(kind: Kind) -> str:
    # The partial index of settled rows is ordered by updated_at (when the row was settled): the
    # oldest come first, and a chunk costs its own size however many rows the table holds.
    return f"{kind.value} INDEXED BY {SETTLED_INDEX[kind]} WHERE state IN ({SETTLED_SQL})"


def delete_settled_sql(kind: Kind, with_cutoff: bool) -> str:
    """Delete up to :limit sent/filtered rows, oldest settled first; with_cutoff: only before :cutoff.

    Two statements rather than `:cutoff IS NULL OR ...`: only a plain range on updated_at stops the
    index walk at the cutoff instead of reading every settled row.
    """
    cutoff = " AND updated_at < :cutoff" if with_cutoff else ""
    return (
        f"DELETE FROM {kind.value} WHERE id IN"
        f" (SELECT id FROM {_settled(kind)}{cutoff} ORDER BY updated_at LIMIT :limit)"
    )


def oldest_settled_sql(kind: Kind) -> str:
    """When the oldest sent/filtered row of `kind` was settled (no row: none is settled)."""
    return f"SELECT updated_at FROM {_settled(kind)} ORDER BY updated_at LIMIT 1"
