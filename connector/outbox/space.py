"""What the outbox file uses on disk, as SQLite counts it: pages in use, free pages, the WAL.

Store.space() reads these figures; the retention pass (outbox.retention) decides from them.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class SpaceFigures:
    """Page figures of the database (PRAGMA page_count, freelist_count, page_size) and the WAL's size."""

    page_size: int
    page_count: int
    freelist_count: int
    wal_bytes: int

    @property
    def in_use_bytes(self) -> int:
        """What rows, indexes and SQLite's own pages take: the file less its free pages.

        The size bound compares this. Not the WAL: its file keeps the size of the largest burst
        since it was created (SQLite reuses it from the start after each checkpoint), so deleting
        rows cannot shrink it, and the deletes themselves write to it.
        """
        return (self.page_count - self.freelist_count) * self.page_size

    @property
    def free_bytes(self) -> int:
        """Pages freed by deletes and not yet given back to the file system."""
        return self.freelist_count * self.page_size
