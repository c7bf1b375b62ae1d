"""The file side of following Master.csv: complete lines only, reading back, finding rotated files.

Blocking functions: callers run them in a worker thread (asyncio.to_thread).
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from connector.backfill.lines import OccurrenceWindow

CHUNK_BYTES = 1 << 20
# Bytes of lines stored per transaction: about 1,000 lines, a few MB of Python objects in flight.
BATCH_BYTES = 256 << 10
# A Master.csv line is a few hundred bytes; anything longer than this is not a CDR line.
MAX_LINE_BYTES = 1 << 20
# Reading back to rebuild the occurrence window stops here even in a file of absurdly long lines.
READ_BACK_MAX_BYTES = 16 << 20

Lines = list[bytes | None]  # None stands for a line longer than MAX_LINE_BYTES (skipped unread)


def complete_lines(
    handle: BinaryIO, offset: int, limit: int, max_bytes: int = CHUNK_BYTES
) -> tuple[Lines, int]:
    """Read the complete lines between offset and limit (about max_bytes of them).

    Return the lines without their LF and the offset just after the last one; a line still
    being written (no LF yet, or its LF beyond limit) is left for the next read.
    """
    if limit <= offset:
        return [], offset
    handle.seek(offset)
    data = handle.read(min(limit - offset, max_bytes))
    cut = data.rfind(b"\n")
    if cut >= 0:
        return list(data[:cut].split(b"\n")), offset + cut + 1
    if len(data) < MAX_LINE_BYTES:
        return [], offset  # a partial last line: wait for the rest
    end = _skip_long_line(handle, offset + len(data), limit)
    return ([None], end) if end is not None else ([], offset)


def _skip_long_line(handle: BinaryIO, position: int, limit: int) -> int | None:
    """Find the end of an over-long line without keeping it; None if it is not complete yet."""
    handle.seek(position)
    while position < limit:
        data = handle.read(min(limit - position, CHUNK_BYTES))
        if not data:
            return None
        newline = data.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(data)
    return None


def lines_before(handle: BinaryIO, offset: int, count: int) -> Lines:
    """The last `count` complete lines before offset (offset is just after a LF), oldest first."""
    if offset <= 0 or count <= 0:
        return []
    end = offset - 1  # drop the LF that ends the last line
    start = end
    data = b""
    while start > 0 and data.count(b"\n") < count and len(data) < READ_BACK_MAX_BYTES:
        step = min(CHUNK_BYTES, start)
        start -= step
        handle.seek(start)
        data = handle.read(end - start)
    lines: Lines = list(data.split(b"\n"))
    if start > 0:
        lines = lines[1:]  # the first piece is the tail of an earlier line
    lines = lines[-count:]
    return [None if line is not None and len(line) > MAX_LINE_BYTES else line for line in lines]


def line_count(handle: BinaryIO, end: int) -> tuple[int, int]:
    """Count the LFs before end; return (lines, offset just after the last LF)."""
    handle.seek(0)
    lines = last = position = 0
    while position < end:
        data = handle.read(min(CHUNK_BYTES, end - position))
        if not data:
            break
        found = data.count(b"\n")
        if found:
            lines += found
            last = position + data.rfind(b"\n") + 1
        position += len(data)
    return lines, last


def ends_a_line(handle: BinaryIO, offset: int) -> bool:
    """Whether offset is the start of the file or just after a LF (a plausible saved position)."""
    if offset == 0:
        return True
    handle.seek(offset - 1)
    return handle.read(1) == b"\n"


def find_inode(path: Path, inode: int) -> Path | None:
    """Find the file with this inode next to path (where a rotated Master.csv went), if any."""
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return None
    for entry in entries:
        try:
            if entry.name != path.name and entry.is_file() and entry.inode() == inode:
                return Path(entry.path)
        except OSError:
            continue
    return None


def stat_or_none(path: Path) -> os.stat_result | None:
    """stat() the path; None while it does not exist."""
    try:
        return path.stat()
    except FileNotFoundError:
        return None


@dataclass
class OpenFile:
    """A CSV file being read: where we are, and the sizes seen (for the grace period)."""

    handle: BinaryIO
    name: Path
    inode: int
    offset: int
    line: int
    window: OccurrenceWindow
    sizes: deque[tuple[float, int]] = field(default_factory=deque)

    def size(self) -> int:
        """The file's current size."""
        return os.fstat(self.handle.fileno()).st_size

    def observe(self, now: float, size: int) -> None:
        """Note the size seen at time `now`."""
        if not self.sizes or self.sizes[-1][1] != size:
            self.sizes.append((now, size))

    def settled(self, before: float) -> int:
        """The largest size seen at or before `before`: bytes older than the grace period."""
        sizes = self.sizes
        while len(sizes) > 1 and sizes[1][0] <= before:
            sizes.popleft()
        return sizes[0][1] if sizes and sizes[0][0] <= before else 0

    def restart(self) -> None:
        """Go back to the start (the file was truncated)."""
        self.offset = self.line = 0
        self.window = OccurrenceWindow(self.window.size)
        self.sizes.clear()

    def close(self) -> None:
        """Close the handle."""
        self.handle.close()
