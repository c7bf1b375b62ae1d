"""Shared by the backfill tests: CSV lines to write, followers to build, the outbox to inspect."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path
from typing import Any

from connector.backfill.lines import check_layout

CSV_LAYOUT = check_layout("csv")


def csv_line(n: int, *, uniqueid: str | None = None, userfield: str = "") -> bytes:
    """A cdr_csv line (18 columns, cdr_csv's quoting) of the n-th synthetic call, with its LF."""
    minute, second = divmod(n % 3600, 60)
    start = f"2026-11-27 10:{minute:02d}:{second:02d}"
    values: list[Any] = [
        "",
        f"1{n % 1000:03d}",
        "200",
        "lab",
        f'"Caller {n}" <1{n % 1000:03d}>',
        f"PJSIP/1{n % 1000:03d}-{n:08x}",
        "PJSIP/200-00000001",
        "Dial",
        "PJSIP/200,30",
        start,
        start,
        start,
        n % 60,
        n % 60,
        "ANSWERED",
        "DOCUMENTATION",
        uniqueid or f"1795800000.{n}",
        userfield,
    ]
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    writer.writerow(values)
    return out.getvalue().encode()


def rows(db: Path, where: str = "1", params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    """Read cdr rows straight from the outbox file."""
    connection = sqlite3.connect(db)
    connection.row_factory = sqlite3.Row
    try:
        return list(connection.execute(f"SELECT * FROM cdr WHERE {where} ORDER BY id", params))
    finally:
        connection.close()


def append(path: Path, data: bytes) -> None:
    """Append bytes to a file, as Asterisk does."""
    with path.open("ab") as handle:
        handle.write(data)


def write(path: Path, data: bytes) -> None:
    """Create or replace a file with these bytes."""
    path.write_bytes(data)


def rotate(path: Path, suffix: str = ".1") -> Path:
    """Move the file aside as logrotate does (Asterisk then creates a new one)."""
    return path.rename(path.with_name(path.name + suffix))


def truncate(path: Path) -> None:
    """Empty the file in place (logrotate's copytruncate)."""
    with path.open("r+b") as handle:
        handle.truncate(0)


def remove(path: Path) -> None:
    """Delete the file."""
    path.unlink()


def inode_and_size(path: Path) -> tuple[int, int]:
    """The file's inode and size."""
    status = path.stat()
    return status.st_ino, status.st_size
