"""Read-only look-ups of the CDRs stored under the UniqueIDs of Master.csv or CDR database rows, and
the rule that tells when a record of another source is one of them (same_cdr).

The follower writes through the store (in `connector run`, a NotifyingSink that only appends), so
these reads have a connection of their own: opened read-only on the outbox file, used from the
worker thread that parses the lines: one query per batch, and a second only for a batch with
lines the outbox does not have. WAL lets it read while the store writes. These two statements are
the only SQL outside connector/outbox; they belong in the store once it has such look-ups.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from connector.cdr.identity import CANONICAL_FIELDS, dedupe_key
from connector.errors import OutboxError
from connector.outbox.names import CDR_RAW_TABLE, CDR_TABLE
from connector.outbox.records import NewCdr

BUSY_TIMEOUT_MS = 5000

# The positions in a JSON array of dedupe keys of those stored under no row: the lines whose CDR
# the outbox does not have. An equality probe of the dedupe_key index, about 1 µs a line.
UNKNOWN_KEYS_SQL = f"SELECT key FROM json_each(?) WHERE value NOT IN (SELECT dedupe_key FROM {CDR_TABLE})"

# The CDRs of these UniqueIDs (a JSON array), oldest first, with their raw headers: every one, or
# only those that came over AMI (a fingerprint).
_SELECT = f"""
SELECT c.uniqueid, c.identity, r.raw
  FROM {CDR_TABLE} AS c JOIN {CDR_RAW_TABLE} AS r USING (id)
 WHERE c.uniqueid IN (SELECT value FROM json_each(?))"""
CDRS_SQL = f"{_SELECT}\n ORDER BY c.id"
AMI_CDRS_SQL = f"{_SELECT} AND c.fingerprint IS NOT NULL\n ORDER BY c.id"

# A DB column shorter than the value Asterisk had keeps its start (FreePBX: lastdata, clid and
# userfield are VARCHAR(80..255)): a value at least this long that starts the other one agrees with it.
TRUNCATED_MIN_CHARS = 20
TIME_CHARS = len("YYYY-MM-DD HH:MM:SS")


def _agrees(name: str, ours: str, theirs: str) -> bool:
    ours, theirs = ours.strip(), theirs.strip()
    if name.endswith("Time"):
        return ours[:TIME_CHARS] == theirs[:TIME_CHARS]  # to the second, whatever follows
    if ours == theirs:
        return True
    return len(ours) >= TRUNCATED_MIN_CHARS and theirs.startswith(ours)


def same_cdr(ours: Mapping[str, str], theirs: Mapping[str, str]) -> bool:
    """Are these two records (by header name, same UniqueID) one CDR?

    `ours` holds only the fields its source read (never derived ones): the Sequence decides when
    both carry one; else every identity field (CANONICAL_FIELDS) that `ours` has must agree with
    `theirs`, times to the second and a text cut short by a column's width counting as agreeing.
    """
    sequence, other = ours.get("Sequence", "").strip(), theirs.get("Sequence", "").strip()
    if sequence and other:
        return sequence == other
    return all(_agrees(name, ours[name], theirs.get(name, "")) for name in CANONICAL_FIELDS if name in ours)


@dataclass(frozen=True)
class AmiCdr:
    """A stored CDR that came over AMI: its identity and its headers by name (the raw object)."""

    identity: str
    fields: Mapping[str, str]


class AmiTwins:
    """The outbox's AMI CDRs by UniqueID, read on a read-only connection opened at first use."""

    def __init__(self, outbox_path: Path) -> None:
        self.outbox_path = outbox_path
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            uri = f"file:{quote(str(self.outbox_path))}?mode=ro"
            # check_same_thread: asyncio.to_thread may run successive batches on different threads;
            # they never overlap (one batch is read at a time).
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._db = db
        return self._db

    def _read(self, sql: str, argument: str) -> list[tuple[str, ...]]:
        try:
            return list(self._connection().execute(sql, (argument,)))
        except sqlite3.Error as error:
            raise OutboxError(f"outbox read failed: {error}") from error

    def unknown(self, rows: Sequence[NewCdr]) -> list[int]:
        """The positions of the rows whose dedupe key (identity and occurrence) is not stored: the
        rows the store would add."""
        if not rows:
            return []
        keys = json.dumps([dedupe_key(row.identity, row.occurrence or 1) for row in rows])
        return [int(index) for (index,) in self._read(UNKNOWN_KEYS_SQL, keys)]

    def ami_cdrs(self, uniqueids: Sequence[str], *, any_source: bool = False) -> dict[str, list[AmiCdr]]:
        """The AMI CDRs (with any_source: every CDR) stored under these UniqueIDs, oldest first."""
        found: dict[str, list[AmiCdr]] = {}
        if not uniqueids:
            return found
        sql = CDRS_SQL if any_source else AMI_CDRS_SQL
        for uniqueid, identity, raw in self._read(sql, json.dumps(list(uniqueids))):
            found.setdefault(uniqueid, []).append(AmiCdr(identity, json.loads(raw)))
        return found

    def close(self) -> None:
        """Close the connection (a later look-up opens a new one)."""
        if self._db is not None:
            self._db.close()
            self._db = None
