"""Open-time checks and Alembic migrations of the outbox file.

Every command that opens the outbox calls `prepare_database` first: it refuses, with one line
naming the file and the fix, anything that is not ours to touch (a missing or unwritable folder,
another application's database, a schema newer than this connector knows), then checks the file
for damage (connector.outbox.quarantine: not SQLite, or failing `PRAGMA quick_check`, raises
OutboxCorrupt, which `connector run` answers by moving the file aside), and only then migrates to
head. Nothing here deletes or rewrites data to "repair" a file.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

import migrations
from connector.errors import OutboxError
from connector.outbox.quarantine import (
    check_header,
    check_integrity,
    connect_read_only,
    corrupt_or_unreadable,
)

if TYPE_CHECKING:
    from alembic.config import Config

# The newest migration in migrations/versions (a test checks it against Alembic's head). Opening an
# outbox already at this revision needs neither Alembic nor SQLAlchemy: ~25 MB less resident memory.
SCHEMA_HEAD = "0005"


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
    check_header(path)
    try:
        with closing(connect_read_only(path)) as connection:
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
    except sqlite3.Error as error:
        raise corrupt_or_unreadable(path, error) from None
    return row[0] if row else None


def _known_head(path: Path, revision: str | None) -> str:
    """Refuse a schema newer than this connector knows; return the newest revision it knows."""
    revisions, head = known_revisions()
    if revision is not None and revision not in revisions:
        raise OutboxError(
            f"{path} has schema {revision}, newer than this connector knows (newest: {head}): "
            "upgrade the connector, or use another DATA_DIR"
        )
    return head


def prepare_database(path: Path) -> None:
    """Check the outbox file, then migrate it to the newest schema."""
    _check_folder(path)
    revision = _check_file(path)
    head = SCHEMA_HEAD if revision == SCHEMA_HEAD else _known_head(path, revision)
    # Damage is looked for after the refusals: another application's file, or a newer connector's,
    # is left where it is even when damaged; only our own outbox is ever moved aside. And before
    # any migration, which would write into the file.
    check_integrity(path)
    if revision != head:
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
        # Takes effect on a file without tables only: a new outbox has incremental vacuum from its
        # first page on (the retention pass gives freed pages back); older files are converted below.
        dbapi_connection.execute("PRAGMA auto_vacuum=INCREMENTAL")

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

    _use_incremental_vacuum(path)


def _use_incremental_vacuum(path: Path) -> None:
    """Convert an outbox made before incremental vacuum (auto_vacuum NONE), once, at its upgrade.

    VACUUM rewrites the whole file, so it runs outside the migration transaction and needs about
    the file's size free. Without it the outbox works the same, only its file never shrinks (freed
    pages are reused), so a failure is a warning rather than a refusal to start.
    """
    import logging

    log = logging.getLogger(__name__)
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        if connection.execute("PRAGMA auto_vacuum").fetchone()[0] != 0:
            return
        log.info("converting %s to incremental vacuum, once (%.0f MB)", path, path.stat().st_size / 2**20)
        connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
        connection.execute("VACUUM")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the WAL holds the whole file now
    except sqlite3.Error as error:
        log.warning(
            "%s was not converted to incremental vacuum (%s): it works, but its file will not shrink "
            "after retention deletes rows; free about its size in DATA_DIR and, with the connector "
            "stopped, run: sqlite3 %s 'PRAGMA auto_vacuum=INCREMENTAL; VACUUM'",
            path,
            error,
            path,
        )
    finally:
        connection.close()
