"""Initial outbox: cdr and recording tables, backlog and failed views.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATES = "'pending', 'sent', 'filtered', 'failed'"


def upgrade() -> None:
    op.create_table(
        "cdr",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("received_at", sa.Text, nullable=False),
        sa.Column("dedupe_key", sa.Text, nullable=False, unique=True),
        sa.Column("identity", sa.Text, nullable=False),
        sa.Column("fingerprint", sa.Text),
        sa.Column("source", sa.Text, nullable=False, server_default="ami"),
        sa.Column("uniqueid", sa.Text, nullable=False),
        sa.Column("linkedid", sa.Text),
        sa.Column("raw", sa.Text, nullable=False),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Text, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("filter_reason", sa.Text),
        sa.Column("sent_at", sa.Text),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.CheckConstraint(f"state IN ({STATES})", name="ck_cdr_state"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_cdr_pending", "cdr", ["id"], sqlite_where=sa.text("state = 'pending'"))
    op.create_index("ix_cdr_uniqueid", "cdr", ["uniqueid"])
    op.create_index("ix_cdr_linkedid", "cdr", ["linkedid"])
    op.create_index("ix_cdr_failed", "cdr", ["updated_at"], sqlite_where=sa.text("state = 'failed'"))

    op.create_table(
        "recording",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("mtime", sa.Float, nullable=False),
        sa.Column("sha256", sa.Text),
        sa.Column("detected_at", sa.Text, nullable=False),
        sa.Column("uniqueid", sa.Text),
        sa.Column("linkedid", sa.Text),
        sa.Column("state", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.Text, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("filter_reason", sa.Text),
        sa.Column("sent_at", sa.Text),
        sa.Column("deleted_at", sa.Text),
        sa.Column("updated_at", sa.Text, nullable=False),
        sa.UniqueConstraint("path", "size", "mtime", name="uq_recording_file"),
        sa.CheckConstraint(f"state IN ({STATES})", name="ck_recording_state"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_recording_pending", "recording", ["id"], sqlite_where=sa.text("state = 'pending'"))
    op.create_index("ix_recording_uniqueid", "recording", ["uniqueid"])
    op.create_index(
        "ix_recording_failed", "recording", ["updated_at"], sqlite_where=sa.text("state = 'failed'")
    )

    # Views for humans with plain sqlite3: what is waiting, and what failed and why.
    op.execute(
        """
        CREATE VIEW backlog AS
        SELECT 'cdr' AS kind, state, count(*) AS rows, min(received_at) AS oldest,
               max(updated_at) AS last_change
          FROM cdr GROUP BY state
        UNION ALL
        SELECT 'recording', state, count(*), min(detected_at), max(updated_at)
          FROM recording GROUP BY state
        """
    )
    op.execute(
        """
        CREATE VIEW failed AS
        SELECT id, 'cdr' AS kind, uniqueid, attempts, last_error, updated_at AS failed_at
          FROM cdr WHERE state = 'failed'
        UNION ALL
        SELECT id, 'recording', uniqueid, attempts, last_error, updated_at
          FROM recording WHERE state = 'failed'
        """
    )


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS failed")
    op.execute("DROP VIEW IF EXISTS backlog")
    op.drop_table("recording")
    op.drop_table("cdr")
