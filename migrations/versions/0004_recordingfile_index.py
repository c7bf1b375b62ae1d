"""Index of each CDR's RecordingFile header: a recording whose name carries no UniqueID finds its call.

FreePBX sets CDR(recordingfile) to the recording's base name (sometimes its full path); with
`recordingfile => RecordingFile` in cdr_manager's [mappings] every CDR frame carries it as the
`RecordingFile` header, stored in cdr_raw.raw. The index is partial: most CDRs have no recording.
The store's look-up (connector.outbox.statements) uses the very same expression, or SQLite would
not use the index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX ix_cdr_raw_recordingfile ON cdr_raw (json_extract(raw, '$.RecordingFile'))"
        " WHERE json_extract(raw, '$.RecordingFile') IS NOT NULL"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_cdr_raw_recordingfile")
