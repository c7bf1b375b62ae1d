"""Damaged outboxes for the salvage tests: a real outbox, then one page of a b-tree overwritten.

The pages are found by reading the file format itself (the b-tree page headers), not through SQLite:
which ids a damaged leaf held is then known independently of what salvage manages to read.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from connector.ami.ingest import new_cdr
from connector.outbox.records import Kind, NewCdr, NewRecording
from connector.outbox.store import Store
from tests.doubles.ami_server import synthetic_cdr

INTERIOR_TABLE_PAGE = 0x05
LEAF_TABLE_PAGE = 0x0D
GARBAGE = b"this page was overwritten by a disk fault "


def synthetic_rows(first: int, count: int) -> list[NewCdr]:
    """The outbox rows of the synthetic Cdr frames first … first+count-1, as `connector run` stores them."""
    rows = []
    for index in range(first, first + count):
        lines = synthetic_cdr(index).decode().rstrip("\r\n").split("\r\n")
        headers = tuple(tuple(line.split(": ", 1)) for line in lines)
        rows.append(new_cdr(headers, 1_795_700_000.0 + index))  # type: ignore[arg-type]
    return rows


def _varint(page: bytes, offset: int) -> tuple[int, int]:
    """SQLite's big-endian varint at `offset`: (value, offset after it)."""
    value = 0
    for i in range(9):
        byte = page[offset + i]
        if i == 8:
            return (value << 8) | byte, offset + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, offset + i + 1
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Leaf:
    """One leaf page of a table b-tree and the row ids it holds."""

    page: int
    ids: tuple[int, ...]


class BTreeFile:
    """Read a SQLite file's pages directly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data = path.read_bytes()
        size = int.from_bytes(self.data[16:18], "big")
        self.page_size = 65536 if size == 1 else size

    def page(self, number: int) -> tuple[bytes, int]:
        """A page's bytes and where its b-tree header starts (after the file header on page 1)."""
        start = (number - 1) * self.page_size
        return self.data[start : start + self.page_size], 100 if number == 1 else 0

    def leaves(self, root: int) -> list[Leaf]:
        """The leaves of the table b-tree rooted at `root`, in id order."""
        page, header = self.page(root)
        kind, cells = page[header], int.from_bytes(page[header + 3 : header + 5], "big")
        if kind == LEAF_TABLE_PAGE:
            pointers = [
                int.from_bytes(page[header + 8 + 2 * i : header + 10 + 2 * i], "big") for i in range(cells)
            ]
            ids = []
            for pointer in pointers:
                _, after_size = _varint(page, pointer)
                ids.append(_varint(page, after_size)[0])
            return [Leaf(root, tuple(ids))]
        assert kind == INTERIOR_TABLE_PAGE, f"page {root} is not a table b-tree page"
        pointers = [
            int.from_bytes(page[header + 12 + 2 * i : header + 14 + 2 * i], "big") for i in range(cells)
        ]
        children = [int.from_bytes(page[p : p + 4], "big") for p in pointers]
        children.append(int.from_bytes(page[header + 8 : header + 12], "big"))
        return [leaf for child in children for leaf in self.leaves(child)]


def root_page(path: Path, table: str) -> int:
    with sqlite3.connect(path) as db:
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()
    db.close()
    return int(root)


def damage_leaf(path: Path, table: str, where: float = 0.5) -> Leaf:
    """Overwrite a leaf of `table` with garbage (0.5: the middle one, 1.0: the last); return it.

    The file must have no WAL: the page is overwritten in the database file itself.
    """
    assert not path.with_name(path.name + "-wal").exists(), "checkpoint the file first"
    tree = BTreeFile(path)
    leaves = tree.leaves(root_page(path, table))
    assert len(leaves) >= 3, f"{table} is too small to have a middle leaf"
    leaf = leaves[min(int(len(leaves) * where), len(leaves) - 1)]
    garbage = (GARBAGE * (tree.page_size // len(GARBAGE) + 1))[: tree.page_size]
    with path.open("r+b") as handle:
        handle.seek((leaf.page - 1) * tree.page_size)
        handle.write(garbage)
    return leaf


def recordings(count: int) -> list[NewRecording]:
    return [
        NewRecording(
            path=f"/var/spool/asterisk/monitor/r{i}.wav",
            size=1000 + i,
            mtime=1_795_700_000.0 + i,
            detected_at=f"2026-11-27T00:00:{i % 60:02d}.000000Z",
            uniqueid=f"1795700000.{i}",
            linkedid=f"1795700000.{i}",
        )
        for i in range(count)
    ]


async def build_outbox(path: Path, cdrs: int, *, sent_every: int = 3, recording_count: int = 6) -> None:
    """A real outbox (schema head) of `cdrs` synthetic CDRs: every `sent_every`-th one sent, one
    filtered, one failed, one waiting for a retry, the rest pending; recordings in several states."""
    store = await Store.open(path)
    try:
        for first in range(0, cdrs, 1000):
            await store.append_cdrs(synthetic_rows(first, min(1000, cdrs - first)))
        ids = list(range(1, cdrs + 1))
        await store.mark_sent(Kind.CDR, ids[::sent_every])
        await store.mark_filtered(Kind.CDR, {ids[1]: "dst_excluded"})
        await store.mark_failed(Kind.CDR, {ids[2]: "HTTP 422: bad field"})
        await store.reschedule(Kind.CDR, [ids[4]], 3600.0, "HTTP 503: busy")
        await store.append_recordings(recordings(recording_count))
        await store.mark_recording_sent(1, "ab" * 32)
        await store.mark_failed(Kind.RECORDING, {2: "HTTP 413: too large"})
    finally:
        await store.close()
