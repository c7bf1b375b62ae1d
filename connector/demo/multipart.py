"""A small streaming multipart/form-data parser (RFC 7578) for the loopback receiver.

The standard library has none (cgi is deprecated and buffers). This one reads the body in chunks
and hands each part's bytes to a sink as they arrive, keeping at most one chunk plus a boundary's
length in memory, so a large upload never sits whole in RAM.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

CHUNK_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_PARTS = 100

_PARAM = re.compile(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
_BOUNDARY = re.compile(r"boundary=(\"[^\"]{1,70}\"|[^;\s]{1,70})", re.IGNORECASE)


class MultipartError(ValueError):
    """The body is not valid multipart/form-data."""


@dataclass(frozen=True)
class Part:
    """One part's headers: its form field name, file name and content type."""

    name: str
    filename: str | None
    content_type: str | None
    headers: dict[str, str] = field(default_factory=dict)


class PartSink(Protocol):
    """Where a part's content goes."""

    def write(self, data: bytes) -> None:
        """Take the next piece of the part's content."""

    def close(self) -> None:
        """The part is complete."""


def boundary_of(content_type: str) -> bytes:
    """Return the boundary of a multipart/form-data Content-Type header."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise MultipartError("Content-Type is not multipart/form-data")
    match = _BOUNDARY.search(content_type)
    if match is None:
        raise MultipartError("multipart Content-Type without a boundary")
    return match[1].strip('"').encode("latin-1")


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_part_headers(block: bytes) -> Part:
    """Parse a part's header block (lines without the final empty line)."""
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\r\n"):
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise MultipartError(f"bad part header line {line[:80]!r}")
        headers[name.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition", "")
    if not disposition.lower().startswith("form-data"):
        raise MultipartError("part without Content-Disposition: form-data")
    params = {key.lower(): _unquote(val) for key, val in _PARAM.findall(disposition)}
    if "name" not in params:
        raise MultipartError("part without a name")
    return Part(params["name"], params.get("filename"), headers.get("content-type"), headers)


class _Reader:
    """A buffer over `read` with the few operations the parser needs."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self._read = read
        self.buffer = b"\r\n"  # so that the first delimiter looks like every other one

    def fill(self) -> bool:
        chunk = self._read(CHUNK_BYTES)
        self.buffer += chunk
        return bool(chunk)

    def need(self, size: int) -> None:
        while len(self.buffer) < size:
            if not self.fill():
                raise MultipartError("body ends in the middle of a part")


def parse_multipart(
    read: Callable[[int], bytes], boundary: bytes, open_part: Callable[[Part], PartSink]
) -> int:
    """Stream every part of the body to the sink `open_part` returns; return the part count."""
    delimiter = b"\r\n--" + boundary
    reader = _Reader(read)
    _skip_preamble(reader, delimiter)
    parts = 0
    while True:
        reader.need(2)
        if reader.buffer.startswith(b"--"):
            return parts  # the close delimiter; the epilogue is ignored
        parts += 1
        if parts > MAX_PARTS:
            raise MultipartError(f"more than {MAX_PARTS} parts")
        sink = open_part(_read_headers(reader))
        _stream_content(reader, delimiter, sink)


def _skip_preamble(reader: _Reader, delimiter: bytes) -> None:
    while (index := reader.buffer.find(delimiter)) < 0:
        reader.buffer = reader.buffer[-(len(delimiter) - 1) :]
        if not reader.fill():
            raise MultipartError("no multipart boundary in the body")
    reader.buffer = reader.buffer[index + len(delimiter) :]


def _read_headers(reader: _Reader) -> Part:
    # After a delimiter: optional transport padding, CRLF, header lines, an empty line.
    while (end := reader.buffer.find(b"\r\n\r\n")) < 0:
        if len(reader.buffer) > MAX_HEADER_BYTES:
            raise MultipartError("part headers too long")
        if not reader.fill():
            raise MultipartError("body ends in part headers")
    if end > MAX_HEADER_BYTES:
        raise MultipartError("part headers too long")
    head = reader.buffer[:end].lstrip(b" \t")
    if head and not head.startswith(b"\r\n"):
        raise MultipartError("no line break after the boundary")
    reader.buffer = reader.buffer[end + 4 :]
    return parse_part_headers(head[2:])


def _stream_content(reader: _Reader, delimiter: bytes, sink: PartSink) -> None:
    keep = len(delimiter) - 1  # a delimiter may straddle two reads
    while (index := reader.buffer.find(delimiter)) < 0:
        if len(reader.buffer) > keep:
            sink.write(reader.buffer[:-keep])
            reader.buffer = reader.buffer[-keep:]
        if not reader.fill():
            raise MultipartError("body ends in the middle of a part")
    if index:
        sink.write(reader.buffer[:index])
    sink.close()
    reader.buffer = reader.buffer[index + len(delimiter) :]
