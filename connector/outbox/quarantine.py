"""A damaged outbox: find it without writing to it, and move it aside so that `connector run` goes on.

`check_integrity` runs SQLite's `PRAGMA quick_check` (every page of every b-tree is read; O(file
size)) through a connection that writes nothing, and raises OutboxCorrupt for a file that is not a
database or fails the check. `move_aside` renames the file, with its -wal and -shm, to
`outbox.db.corrupt-<UTC time>` in the same folder: the bytes stay exactly as they were, a hot WAL
included (it is moved, never checkpointed into the file), so `connector salvage FILE` can recover
what rows it still holds. Only corruption comes here: another application's database or a newer
schema is an operator's mistake, and `prepare_database` refuses those.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

from connector.errors import OutboxCorrupt, OutboxError

SQLITE_MAGIC = b"SQLite format 3\x00"
# SQLite's own files next to a database, moved with it. A -wal holds committed rows not yet
# copied into the file; the -shm is only an index of the -wal, moved so nothing is left behind.
COMPANIONS = ("-wal", "-shm")
QUARANTINE_MARK = ".corrupt-"
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
# quick_check lists at most this many problems; the first one goes into the message.
MAX_PROBLEMS = 10
# Primary result codes that mean "the bytes are wrong" (SQLITE_CORRUPT, SQLITE_NOTADB). Anything
# else (locked, I/O error, no permission) says nothing about the file's content: refuse, not move.
_CORRUPTION_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def companion(path: Path, suffix: str) -> Path:
    """The -wal or -shm file of the database at `path`."""
    return path.with_name(path.name + suffix)


def read_only_uri(path: Path) -> str:
    """A URI that reads the database at `path`, its -wal included, changing no byte of its files."""
    uri = f"file:{quote(str(path))}?mode=ro"
    # mode=ro alone still writes into an existing -shm (read marks, a rebuilt index). With
    # readonly_shm SQLite maps it read-only and, when that index cannot be trusted, reads the -wal
    # itself. Without a -shm, SQLite must create one (and may create an empty -wal) to read a WAL
    # database: new files, no byte of an existing one changes.
    if companion(path, "-shm").exists():
        uri += "&readonly_shm=1"
    return uri


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection to `path` (see read_only_uri: it may create a -wal/-shm, never edits one)."""
    return sqlite3.connect(read_only_uri(path), uri=True)


def is_corruption(error: sqlite3.Error) -> bool:
    """Whether SQLite refused the file because its bytes are damaged, not for any other reason."""
    return (getattr(error, "sqlite_errorcode", 0) & 0xFF) in _CORRUPTION_CODES


def corrupt_or_unreadable(path: Path, error: sqlite3.Error) -> OutboxError:
    """The error to raise for a SQLite error met while reading `path`."""
    if is_corruption(error):
        return OutboxCorrupt(path, f"is corrupt or unreadable ({error})")
    return OutboxError(
        f"{path} cannot be read ({error}): check that no other program holds it and that the disk is "
        "sound, then try again"
    )


def check_header(path: Path) -> None:
    """Raise OutboxCorrupt unless `path` starts like a SQLite database (an empty file is fine)."""
    try:
        with path.open("rb") as handle:
            header = handle.read(len(SQLITE_MAGIC))
    except OSError as error:
        raise OutboxError(
            f"cannot read {path} ({error.strerror}): move it away or fix its permissions"
        ) from None
    if header and header != SQLITE_MAGIC:
        raise OutboxCorrupt(path, "is not a SQLite database")


def quick_check(connection: sqlite3.Connection, path: Path) -> None:
    """Run `PRAGMA quick_check` on an open connection; raise OutboxCorrupt for any problem it finds."""
    try:
        # A problem may span lines ("*** in database main ***\nPage 7: ..."): the message is one line.
        rows = connection.execute(f"PRAGMA quick_check({MAX_PROBLEMS})")
        problems = [" ".join(str(row[0]).split()) for row in rows]
    except sqlite3.Error as error:
        raise corrupt_or_unreadable(path, error) from None
    if problems != ["ok"]:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise OutboxCorrupt(path, f"is corrupt or unreadable (quick_check: {problems[0]}{more})")


def check_integrity(path: Path) -> None:
    """Raise OutboxCorrupt if `path` is not a database or fails quick_check; write nothing.

    A missing or empty file passes: there is nothing to check, the open creates the outbox.
    """
    if not path.exists() or path.stat().st_size == 0:
        return
    check_header(path)
    try:
        connection = connect_read_only(path)
    except sqlite3.Error as error:
        raise corrupt_or_unreadable(path, error) from None
    with closing(connection):
        quick_check(connection, path)


def quarantine_name(path: Path, when: datetime, attempt: int = 1) -> Path:
    """Where the damaged `path` goes: `outbox.db.corrupt-20261127T134500Z` (`-2`, … if taken)."""
    stamp = when.astimezone(UTC).strftime(STAMP_FORMAT)
    again = f"-{attempt}" if attempt > 1 else ""
    return path.with_name(f"{path.name}{QUARANTINE_MARK}{stamp}{again}")


def _taken(target: Path) -> bool:
    return any(companion(target, suffix).exists() for suffix in ("", *COMPANIONS))


def free_quarantine_name(path: Path, when: datetime) -> Path:
    """The first quarantine name for `path` at `when` that no file (or -wal, -shm) uses yet."""
    attempt = 1
    while _taken(target := quarantine_name(path, when, attempt)):
        attempt += 1
    return target


@dataclass(frozen=True)
class Quarantined:
    """Where a damaged outbox went: the database file and the companions that came with it."""

    database: Path
    companions: tuple[Path, ...]


def move_aside(path: Path, when: datetime | None = None) -> Quarantined:
    """Rename `path` and its -wal/-shm to a free quarantine name in the same folder, bytes unchanged.

    The caller holds the DATA_DIR lock, so no other `connector run` picks the same name meanwhile.
    """
    target = free_quarantine_name(path, when or datetime.now(UTC))
    moved = []
    try:
        # The companions first: were the move cut short after the database, the fresh outbox created
        # in its place would meet the old -wal, and SQLite deletes a -wal found next to an empty file.
        for suffix in COMPANIONS:
            source = companion(path, suffix)
            if source.exists():
                os.replace(source, companion(target, suffix))
                moved.append(companion(target, suffix))
        os.replace(path, target)
        _sync_folder(path.parent)
    except OSError as error:
        raise OutboxError(
            f"cannot move the damaged {path} aside to {target} ({error.strerror}): "
            "move it away by hand, or fix DATA_DIR's permissions"
        ) from None
    return Quarantined(target, tuple(moved))


def _sync_folder(folder: Path) -> None:
    # A rename is durable only once the folder is on disk: after a power cut the damaged file must
    # not be back under the outbox's name while the fresh outbox already took rows.
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def quarantined_files(path: Path) -> list[Path]:
    """The quarantined copies of the outbox at `path`, oldest first (their -wal/-shm left out)."""
    found = path.parent.glob(f"{path.name}{QUARANTINE_MARK}*")
    return sorted(p for p in found if not p.name.endswith(COMPANIONS))
