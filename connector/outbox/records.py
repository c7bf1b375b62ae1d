"""Rows as they cross module boundaries: frozen dataclasses, never loose tuples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from connector.cdr.raw import headers_of_raw


class State(StrEnum):
    """The life of an outbox row: pending → sent | filtered | failed; failed → pending by resend."""

    PENDING = "pending"
    """Stored, not yet delivered; drainers pick it up once next_attempt_at is due."""
    SENT = "sent"
    """The API acknowledged it (2xx or 409)."""
    FILTERED = "filtered"
    """A filter excluded it; kept for audit (filter_reason says why), never sent."""
    FAILED = "failed"
    """The API rejected it (last_error holds its answer); `connector resend` makes it pending."""


class Kind(StrEnum):
    """The two outbox tables."""

    CDR = "cdr"
    RECORDING = "recording"


Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class NewCdr:
    """A CDR to append: every AMI header exactly as received, in order."""

    headers: Headers
    received_at: str  # UTC ISO-8601
    identity: str  # hash of the canonical CDR fields (connector.cdr.identity)
    # Hash of every header of an AMI frame: tells a duplicated frame from a distinct twin (ForkCDR).
    # None for rows read from a CSV file, whose caller numbers identical lines itself (occurrence).
    fingerprint: str | None
    uniqueid: str
    linkedid: str | None
    source: str = "ami"
    # A CSV line's number among identical lines; for a frame salvaged from another outbox, the
    # number it had there (connector.outbox.numbering).
    occurrence: int | None = None
    # The headers already encoded as the stored `raw` object (connector.cdr.raw.raw_json); None lets
    # the store encode them.
    raw_json: str | None = None


@dataclass(frozen=True)
class CdrRow:
    """A stored CDR."""

    id: int
    received_at: str
    dedupe_key: str
    source: str
    uniqueid: str
    linkedid: str | None
    # The stored raw object: every header in AMI order, a repeated one as `Name#2` (connector.cdr.raw).
    raw: Mapping[str, str]
    state: State
    attempts: int
    next_attempt_at: str
    last_error: str | None
    filter_reason: str | None
    sent_at: str | None

    @property
    def headers(self) -> Headers:
        """The headers as received, in order."""
        return headers_of_raw(self.raw)


@dataclass(frozen=True)
class NewRecording:
    """A finished recording file to upload."""

    path: str
    size: int
    mtime: float
    detected_at: str
    uniqueid: str | None = None
    linkedid: str | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class RecordingRow:
    """A stored recording."""

    id: int
    path: str
    size: int
    mtime: float
    sha256: str | None
    detected_at: str
    uniqueid: str | None
    linkedid: str | None
    state: State
    attempts: int
    next_attempt_at: str
    last_error: str | None
    sent_at: str | None
    deleted_at: str | None


@dataclass(frozen=True)
class CsvPosition:
    """How far a CSV file has been read: its inode, the byte offset and line number after the last
    complete line consumed."""

    path: str
    inode: int
    offset: int
    line: int


@dataclass(frozen=True)
class DbPosition:
    """How far the CDR database follower has read: the end time (the PBX's local time,
    `YYYY-MM-DD HH:MM:SS`) from which its next read starts, for one source (server/database/table)."""

    source: str
    position: str


@dataclass(frozen=True)
class Delivery:
    """Where a row read from another outbox stood (`connector salvage` keeps it as it was)."""

    state: State
    attempts: int
    next_attempt_at: str
    last_error: str | None
    filter_reason: str | None
    sent_at: str | None
    updated_at: str


@dataclass(frozen=True)
class SalvagedCdr:
    """A CDR read from a damaged outbox; `cdr.occurrence` is the number of its dedupe key there."""

    cdr: NewCdr
    delivery: Delivery


@dataclass(frozen=True)
class SalvagedRecording:
    """A recording row read from a damaged outbox."""

    recording: NewRecording
    delivery: Delivery
    deleted_at: str | None
