"""Open-time checks and Alembic migrations of the outbox file.

Every command that opens the outbox calls `prepare_database` first: it refuses, with one line
naming the file and the fix, anything that is not ours to touch (a missing or unwritable folder, a
file that is not SQLite, another application's database, a schema newer than this connector
knows), and only then migrates to head. Nothing here deletes or rewrites data to "repair" a file.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import migrations
from connector.errors import OutboxError

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE_MAGIC = b"SQLite format 3\x00"
# The newest migration in migrations/versions (a test checks it against Alembic's head). Opening an
# outbox already at this revision needs neither Alembic nor SQLAlchemy: ~25 MB less resident memory.
SCHEMA_HEAD = "0002"


def _alembic_config() -> Config:
    from alembic.config import Config

    # The scripts ship as the `migrations` package, so an installed connector (pip install .,
    # no repository and no alembic.ini) finds them too.
    config = Config()
    config.set_main_option("script_location", str(Path(next(iter(migrations.__path__))).resolve()))
    return config


def known_revisions() -> tuple[set[str], str]:
    """All revisions this connector ships, and the head."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config())
    head = script.get_current_head()
    return {rev.revision for rev in script.walk_revisions()}, head or ""


def _check_folder(path: Path) -> None:
    folder = path.parent
    if not folder.is_dir():
        raise OutboxError(f"DATA_DIR {folder} does not exist: create it or mount a volume there")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutboxError(
            f"DATA_DIR {folder} is not writable by this user (uid {os.getuid()}): "
            "fix its owner or permissions"
        )
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise OutboxError(
            f"{path} is read-only for this user (uid {os.getuid()}): fix its owner or permissions"
        )


def _check_file(path: Path) -> str | None:
    """Refuse a file that is not our outbox; return its schema revision (None when empty)."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open("rb") as handle:
        if handle.read(16) != SQLITE_MAGIC:
            raise OutboxError(f"{path} is not a SQLite database: move it away or point DATA_DIR elsewhere")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            tables = {
                row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if "alembic_version" not in tables:
                if tables - {"sqlite_sequence"}:
                    raise OutboxError(
                        f"{path} is not a connector outbox (it holds tables "
                        f"{', '.join(sorted(tables))}): point DATA_DIR to a folder of its own"
                    )
                return None
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError as error:
        raise OutboxError(
            f"{path} is corrupt or unreadable ({error}): restore it from a backup or move it away"
        ) from None
    return row[0] if row else None


def prepare_database(path: Path) -> None:
    """Check the outbox file and migrate it to the newest schema."""
    _check_folder(path)
    revision = _check_file(path)
    if revision == SCHEMA_HEAD:
        return
    revisions, head = known_revisions()
    if revision is not None and revision not in revisions:
        raise OutboxError(
            f"{path} has schema {revision}, newer than this connector knows (newest: {head}): "
            "upgrade the connector, or use another DATA_DIR"
        )
    if revision == head:
        return
    _upgrade(path)


def _upgrade(path: Path) -> None:
    from alembic import command
    from sqlalchemy import create_engine, event, pool

    engine = create_engine(f"sqlite:///{path}", poolclass=pool.NullPool)

    # pysqlite commits before every DDL statement on its own; take the transaction in hand so
    # that a migration interrupted halfway (crash, kill, full disk) leaves the file as it was.
    @event.listens_for(engine, "connect")
    def _manual_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with engine.begin() as connection:
            config = _alembic_config()
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except Exception as error:  # any failure here is a user-facing, one-line problem
        message = str(getattr(error, "orig", None) or error).splitlines()[0]
        raise OutboxError(f"cannot migrate {path}: {message}") from None
    finally:
        engine.dispose()
