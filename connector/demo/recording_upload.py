"""The receiver's POST /mqs/recording: stream the multipart upload to disk and check it."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any, BinaryIO

from connector.demo.multipart import MultipartError, Part, PartSink, boundary_of, parse_multipart

FILE_FIELD = "audio"
REQUIRED_FIELDS = ("recording_id", "file_name", "file_size", "sha256", "recorded_at")
MAX_FIELD_BYTES = 64 * 1024
_UTC_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class UploadError(Exception):
    """The upload is refused with `status`; `body_consumed` tells if the body was read to its end."""

    def __init__(self, message: str, status: int, body_consumed: bool) -> None:
        super().__init__(message)
        self.status = status
        self.body_consumed = body_consumed


class _TextSink:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data
        if len(self.data) > MAX_FIELD_BYTES:
            raise MultipartError(f"a text field is longer than {MAX_FIELD_BYTES} bytes")

    def close(self) -> None:
        pass


class _FileSink:
    """Hash the file part and, when a data dir is given, write it there as it arrives."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._file: BinaryIO | None = path.open("wb") if path else None

    def write(self, data: bytes) -> None:
        self.sha256.update(data)
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass
class Upload:
    """A received recording: its text fields and where its bytes went."""

    fields: dict[str, str]
    content_type: str | None
    size: int
    sha256: str
    path: Path | None

    def record(self) -> dict[str, Any]:
        """What the receiver remembers about it."""
        return {
            **self.fields,
            "content_type": self.content_type,
            "received_size": self.size,
            "received_sha256": self.sha256,
            "path": str(self.path) if self.path else None,
        }

    def discard(self) -> None:
        """Delete the stored copy (a duplicate upload)."""
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class _Collector:
    """Hands out sinks for the parser and keeps what they collected."""

    def __init__(self, data_dir: Path | None) -> None:
        self.directory = data_dir / "recordings" if data_dir else None
        self.texts: dict[str, _TextSink] = {}
        self.file: _FileSink | None = None
        self.file_part: Part | None = None

    def open_part(self, part: Part) -> PartSink:
        if part.filename is None:
            if part.name in self.texts:
                raise MultipartError(f"field {part.name!r} sent twice")
            self.texts[part.name] = _TextSink()
            return self.texts[part.name]
        if part.name != FILE_FIELD or self.file is not None:
            raise MultipartError(f"unexpected file part {part.name!r}")
        path = None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            safe = _UNSAFE.sub("_", part.filename)[-100:] or "audio"
            path = self.directory / f"{uuid.uuid4().hex[:12]}-{safe}"
        self.file, self.file_part = _FileSink(path), part
        return self.file

    def close_all(self) -> None:
        if self.file is not None:
            self.file.close()

    def discard(self) -> None:
        self.close_all()
        if self.file is not None and self.file.path is not None:
            self.file.path.unlink(missing_ok=True)


def receive_upload(read: Callable[[int], bytes], headers: Message, data_dir: Path | None) -> Upload:
    """Parse and check one upload; raise UploadError (400 malformed, 422 inconsistent)."""
    collector = _Collector(data_dir)
    try:
        boundary = boundary_of(headers.get("Content-Type", ""))
        parse_multipart(read, boundary, collector.open_part)
    except MultipartError as error:
        collector.discard()
        raise UploadError(str(error), 400, body_consumed=False) from None
    except BaseException:
        collector.discard()
        raise
    collector.close_all()
    fields = {name: sink.data.decode("utf-8", "replace") for name, sink in collector.texts.items()}
    sink, part = collector.file, collector.file_part
    problem = f"no file part {FILE_FIELD!r}"
    if sink is not None and part is not None:
        upload = Upload(fields, part.content_type, sink.size, sink.sha256.hexdigest(), sink.path)
        problem = _problem(upload) or ""
        if not problem:
            return upload
    collector.discard()
    raise UploadError(problem, 422, body_consumed=True)


def _problem(upload: Upload) -> str | None:
    fields = upload.fields
    missing = [name for name in REQUIRED_FIELDS if not fields.get(name)]
    if missing:
        return f"missing field(s): {', '.join(missing)}"
    content_type = upload.content_type or ""
    if not content_type.startswith("audio/"):
        return f"file part content type {content_type!r} is not audio/*"
    if fields["file_size"] != str(upload.size):
        return f"file_size {fields['file_size']} but {upload.size} bytes received"
    if fields["sha256"].lower() != upload.sha256:
        return "sha256 does not match the bytes received"
    if not _UTC_TIME.fullmatch(fields["recorded_at"]):
        return "recorded_at must be UTC ISO-8601 ending in Z"
    return None
