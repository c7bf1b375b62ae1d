"""A multipart/form-data body that streams one file from disk without blocking the event loop.

httpx's own `files=` also streams, but reads the file synchronously on the event loop; a slow disk
would then stall the AMI listener, which Asterisk drops after 100 ms of back-pressure. Here every
read runs in a worker thread, and the Content-Length is known up front (some proxies refuse chunked
uploads).

Optionally the file's sha256 is computed while it streams and sent as a text field *after* the file
part (multipart allows any order): the file is then read once, not twice, and the body's length is
still known up front because a sha256 is always 64 hex digits.

A file that cannot be opened or read raises FileProblem (connector.errors), never OSError; its
message is what the uploader keeps as the row's last_error.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import secrets
import stat
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from connector.errors import FileChanged, FileProblem

CHUNK_BYTES = 256 * 1024  # what each write to the socket gets
READ_BYTES = 4 * CHUNK_BYTES  # what each trip to the worker thread reads
SHA256_HEX_CHARS = 64
# O_NOFOLLOW: a symlink swapped in for the file is refused (ELOOP), not followed. O_NONBLOCK: a FIFO
# swapped in does not block the open (its fstat then shows it is no regular file).
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
VANISHED = "file vanished before upload"


def file_problem(error: OSError) -> FileProblem:
    """Say why a file could not be opened or read, in words for the row's last_error."""
    if isinstance(error, FileNotFoundError):
        return FileProblem(VANISHED)
    if error.errno == errno.ELOOP:
        return FileProblem("the file was replaced by a symbolic link; not following it")
    return FileProblem(f"cannot read the file: {error.strerror or error}")


@contextmanager
def _reading() -> Iterator[None]:
    """Turn an OSError from opening or reading the file into its FileProblem."""
    try:
        yield
    except OSError as error:
        raise file_problem(error) from error


@dataclass(frozen=True)
class FileState:
    """The size and mtime (st_mtime) a file must still have when it is uploaded."""

    size: int
    mtime: float


@dataclass
class TrailingDigest:
    """Ask for the file's sha256 as text field `name` after the file part; `hexdigest` is set once sent."""

    name: str = "sha256"
    hexdigest: str = ""


def _quote(value: str) -> str:
    # As browsers and httpx do: the header stays one line and the quoted string stays closed.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _text_part(boundary: str, name: str, value: str) -> str:
    return f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(name)}"\r\n\r\n{value}\r\n'


@dataclass
class MultipartFile:
    """The body: text fields, the file part, then the trailing digest field if asked; iterate once."""

    handle: BinaryIO
    size: int
    head: bytes
    boundary: str
    media_type: str
    expected: FileState | None = None
    digest: TrailingDigest | None = None
    _hash: Any = field(default=None, repr=False)

    @property
    def tail(self) -> bytes:
        """The bytes after the file (the digest field's value is known once the file was read)."""
        trailer = ""
        if self.digest is not None:
            value = self.digest.hexdigest or "0" * SHA256_HEX_CHARS  # same length: for content_length
            trailer = _text_part(self.boundary, self.digest.name, value)
        return f"\r\n{trailer}--{self.boundary}--\r\n".encode("utf-8", "surrogateescape")

    @property
    def content_length(self) -> int:
        """Return the exact number of bytes the body will produce."""
        return len(self.head) + self.size + len(self.tail)

    def _read(self, size: int) -> list[bytes]:
        """Read up to `size` bytes as chunks of CHUNK_BYTES ([] at the end of the file)."""
        with _reading():
            return self._read_chunks(size)

    def _read_chunks(self, size: int) -> list[bytes]:
        chunks = []
        while size > 0:
            chunk = self.handle.read(min(CHUNK_BYTES, size))
            if not chunk:
                break
            if self._hash is not None:
                self._hash.update(chunk)  # here too, in the worker thread: hashlib releases the GIL
            chunks.append(chunk)
            size -= len(chunk)
        return chunks

    def _restart(self) -> None:
        with _reading():
            self.handle.seek(0)
        self._hash = hashlib.sha256() if self.digest is not None else None

    def _check_unchanged(self) -> None:
        if self.expected is None:
            return
        with _reading():
            status = os.fstat(self.handle.fileno())
        if not _same(status, self.expected):
            raise FileChanged("the file changed during the upload")

    async def __aiter__(self) -> AsyncIterator[bytes]:
        await asyncio.to_thread(self._restart)  # a re-sent request starts from the beginning
        yield self.head
        loop = asyncio.get_running_loop()
        remaining = self.size
        # The worker thread reads (and hashes) READ_BYTES per trip, one trip ahead: the next chunks
        # are read while these are sent, so disk, hash and socket overlap instead of taking turns.
        ahead = loop.run_in_executor(None, self._read, min(READ_BYTES, remaining)) if remaining else None
        try:
            while ahead is not None:
                chunks = await ahead
                ahead = None
                if not chunks:
                    raise FileChanged(f"file ended {remaining} bytes early during upload")
                remaining -= sum(map(len, chunks))
                if remaining:
                    ahead = loop.run_in_executor(None, self._read, min(READ_BYTES, remaining))
                for chunk in chunks:
                    yield chunk
        finally:
            if ahead is not None:
                ahead.cancel()
        # The tail is held back until the file is known unchanged: a body of mixed old and new
        # bytes is then never completed, so the API cannot accept it.
        await asyncio.to_thread(self._check_unchanged)
        if self.digest is not None and self._hash is not None:
            self.digest.hexdigest = self._hash.hexdigest()
        yield self.tail


def _same(status: os.stat_result, expected: FileState) -> bool:
    return status.st_size == expected.size and status.st_mtime == expected.mtime


def _open(path: Path, expected: FileState | None) -> tuple[BinaryIO, int]:
    """Open a regular file without following a final symlink; check it is still as expected."""
    with _reading():
        return _open_regular(path, expected)


def _open_regular(path: Path, expected: FileState | None) -> tuple[BinaryIO, int]:
    descriptor = os.open(path, OPEN_FLAGS)
    try:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if expected is not None and not _same(status, expected):
            raise FileChanged(
                f"file changed since it was detected ({expected.size} bytes then, {status.st_size} now)"
            )
        os.set_blocking(descriptor, True)
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    return handle, status.st_size


async def open_multipart(
    path: Path,
    field: str,
    fields: Mapping[str, str],
    content_type: str,
    *,
    expected: FileState | None = None,
    digest: TrailingDigest | None = None,
) -> MultipartFile:
    """Open `path` and prepare a body with `fields` and the file as part `field`; close it after.

    A file that cannot be opened raises FileProblem; with `expected`, a file whose size or mtime
    differ raises FileChanged (a FileProblem) before anything is sent.
    With `digest`, the file's sha256 is computed while it streams and sent after the file part.
    """
    handle, size = await asyncio.to_thread(_open, path, expected)
    boundary = secrets.token_hex(16)
    parts = [_text_part(boundary, name, value) for name, value in fields.items()]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{_quote(field)}"; '
        f'filename="{_quote(path.name)}"\r\nContent-Type: {content_type}\r\n\r\n'
    )
    head = "".join(parts).encode("utf-8", "surrogateescape")
    media_type = f"multipart/form-data; boundary={boundary}"
    return MultipartFile(handle, size, head, boundary, media_type, expected, digest)
