"""Raw headers in a table of their own, as a JSON object; settled-row indexes; the cdrs and recordings views.

- `cdr.raw` (a JSON array of [name, value] pairs) moves to `cdr_raw.raw` as a JSON object of the
  headers in AMI order, a repeated name stored as `Name#2`, `Name#3`, ... (connector.cdr.raw), so
  that marking a row sent rewrites a narrow row and `raw ->> '$.Destination'` works in sqlite3.
- `ix_cdr_settled` / `ix_recording_settled`: retention deletes settled rows oldest first.
- Views `cdrs` and `recordings`: one row per stored CDR / recording with the fields operators read.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CHUNK_ROWS = 5000

CDRS_VIEW = """
CREATE VIEW cdrs AS
SELECT c.id, c.state, c.received_at, c.sent_at, c.uniqueid, c.linkedid,
       CAST(nullif(json_extract(r.raw, '$.Sequence'), '') AS INTEGER) AS sequence,
       json_extract(r.raw, '$.Source') AS src,
       json_extract(r.raw, '$.Destination') AS dst,
       json_extract(r.raw, '$.DestinationContext') AS dcontext,
       json_extract(r.raw, '$.CallerID') AS clid,
       json_extract(r.raw, '$.Channel') AS channel,
       json_extract(r.raw, '$.DestinationChannel') AS dstchannel,
       json_extract(r.raw, '$.Disposition') AS disposition,
       CAST(nullif(json_extract(r.raw, '$.Duration'), '') AS INTEGER) AS duration,
       CAST(nullif(json_extract(r.raw, '$.BillableSeconds'), '') AS INTEGER) AS billsec,
       nullif(json_extract(r.raw, '$.StartTime'), '') AS start_time,
       nullif(json_extract(r.raw, '$.AnswerTime'), '') AS answer_time,
       nullif(json_extract(r.raw, '$.EndTime'), '') AS end_time,
       json_extract(r.raw, '$.AccountCode') AS accountcode,
       json_extract(r.raw, '$.UserField') AS userfield,
       c.attempts, c.next_attempt_at, c.last_error, c.filter_reason, c.source, r.raw
  FROM cdr AS c LEFT JOIN cdr_raw AS r ON r.id = c.id
"""

RECORDINGS_VIEW = """
CREATE VIEW recordings AS
SELECT id, state, detected_at, sent_at, path, size, datetime(mtime, 'unixepoch') AS modified_at, sha256,
       uniqueid, linkedid, attempts, next_attempt_at, last_error, filter_reason, deleted_at
  FROM recording
"""


def _object_of_pairs(pairs: list[list[str]]) -> str:
    """The stored form of connector.cdr.raw (frozen here: a migration never imports the app)."""
    raw: dict[str, str] = {}
    for name, value in pairs:
        key, occurrence = name, 1
        while key in raw:
            occurrence += 1
            key = f"{name}#{occurrence}"
        raw[key] = value
    return json.dumps(raw, ensure_ascii=False, separators=(",", ":"))


def _pairs_of_object(text: str) -> str:
    pairs = []
    seen: set[str] = set()
    for key, value in json.loads(text).items():
        base, hash_sign, number = key.rpartition("#")
        name = base if hash_sign and number.isdigit() and base in seen else key
        seen.add(name)
        pairs.append([name, value])
    return json.dumps(pairs, ensure_ascii=False)


def _copy_raw(connection: Any, select_sql: str, insert_sql: str, convert: Any) -> None:
    last_id = 0
    while True:
        rows = connection.exec_driver_sql(select_sql, (last_id, CHUNK_ROWS)).fetchall()
        if not rows:
            return
        connection.exec_driver_sql(insert_sql, [(convert(raw), row_id) for row_id, raw in rows])
        last_id = rows[-1][0]


def upgrade() -> None:
    connection = op.get_bind()
    op.create_table(
        "cdr_raw",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("raw", sa.Text, nullable=False),
    )
    _copy_raw(
        connection,
        "SELECT id, raw FROM cdr WHERE id > ? ORDER BY id LIMIT ?",
        "INSERT INTO cdr_raw (raw, id) VALUES (?, ?)",
        lambda raw: _object_of_pairs(json.loads(raw)),
    )
    op.execute("ALTER TABLE cdr DROP COLUMN raw")
    op.execute(
        "CREATE TRIGGER cdr_raw_follows_delete AFTER DELETE ON cdr"
        " BEGIN DELETE FROM cdr_raw WHERE id = old.id; END"
    )
    op.create_index(
        "ix_cdr_settled", "cdr", ["updated_at"], sqlite_where=sa.text("state IN ('sent', 'filtered')")
    )
    op.create_index(
        "ix_recording_settled",
        "recording",
        ["updated_at"],
        sqlite_where=sa.text("state IN ('sent', 'filtered')"),
    )
    op.execute(CDRS_VIEW)
    op.execute(RECORDINGS_VIEW)


def downgrade() -> None:
    connection = op.get_bind()
    op.execute("DROP VIEW IF EXISTS recordings")
    op.execute("DROP VIEW IF EXISTS cdrs")
    op.drop_index("ix_recording_settled", "recording")
    op.drop_index("ix_cdr_settled", "cdr")
    op.execute("DROP TRIGGER IF EXISTS cdr_raw_follows_delete")
    op.execute("ALTER TABLE cdr ADD COLUMN raw TEXT NOT NULL DEFAULT '[]'")
    _copy_raw(
        connection,
        "SELECT id, raw FROM cdr_raw WHERE id > ? ORDER BY id LIMIT ?",
        "UPDATE cdr SET raw = ? WHERE id = ?",
        _pairs_of_object,
    )
    op.drop_table("cdr_raw")
