"""The pieces of a recording upload, apart from the loop (connector.recordings.uploader).

What goes with a recording to the API, and what happens to the file after: its stable id, the
form fields, the content type, the call it belongs to, and deletion after a delivered upload.
No outbox and no HTTP here: the uploader reads the rows and the API client sends the request.
"""

from __future__ import annotations

import hashlib
import json
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connector.cdr.mapping import MappingOptions, cdr_payload
from connector.outbox.records import CdrRow, RecordingRow
from connector.recordings.scan import is_within
from connector.timeutil import to_iso

CONTENT_TYPES = {
    ".wav": "audio/wav",
    ".wav49": "audio/wav",
    ".mp3": "audio/mpeg",
    ".gsm": "audio/x-gsm",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".flac": "audio/flac",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"
_RECORDING_ID_DOMAIN = "sipstack-connector-asterisk/recording/v1\n"
RECORDING_ID_HEX_CHARS = 32


@dataclass(frozen=True)
class CallLink:
    """What a recording learns from its channel's CDRs."""

    uniqueid: str
    linkedid: str | None = None
    src_number: str | None = None
    dst_number: str | None = None
    calldate: str | None = None
    duration: int | None = None


def _first_text(payloads: Iterable[Mapping[str, Any]], key: str) -> str | None:
    return next((str(p[key]) for p in payloads if str(p.get(key) or "").strip()), None)


def call_link(cdrs: Sequence[CdrRow], options: MappingOptions) -> CallLink | None:
    """Summarize a channel's CDRs (oldest first): the first gives the parties, all the time span."""
    if not cdrs:
        return None
    payloads = [cdr_payload(row, options) for row in cdrs]
    calldates = [str(p["calldate"]) for p in payloads if "calldate" in p]
    durations = [int(p["duration"]) for p in payloads if "duration" in p]
    return CallLink(
        uniqueid=_first_text(payloads, "uniqueid") or cdrs[0].uniqueid,
        linkedid=_first_text(payloads, "linkedid") or cdrs[0].linkedid or None,
        src_number=_first_text(payloads, "src_number"),
        dst_number=_first_text(payloads, "dst_number"),
        calldate=min(calldates) if calldates else None,  # same UTC ISO format: text order is time order
        duration=max(durations) if durations else None,
    )


def recording_file_names(path: str) -> tuple[str, str]:
    """What CDR(recordingfile) holds for this file: FreePBX writes its base name, some dialplans the path."""
    return Path(path).name, path


def recording_id(row: RecordingRow) -> str:
    """The recording's stable id: a hash of its path, size and mtime (the row's identity)."""
    identity = json.dumps([row.path, row.size, row.mtime], ensure_ascii=False)
    digest = hashlib.sha256((_RECORDING_ID_DOMAIN + identity).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:RECORDING_ID_HEX_CHARS]


def content_type_for(path: Path) -> str:
    """The audio part's content type, from the file extension."""
    return CONTENT_TYPES.get(path.suffix.lower(), DEFAULT_CONTENT_TYPE)


def recorded_at(mtime: float) -> str:
    """The file's mtime as UTC ISO-8601 with a `Z`."""
    return to_iso(datetime.fromtimestamp(mtime, UTC))


def recording_fields(row: RecordingRow, link: CallLink | None) -> dict[str, str]:
    """The text fields sent before the file part (sha256 follows the file); unknown ones omitted."""
    fields = {
        "recording_id": recording_id(row),
        "file_name": Path(row.path).name,
        "file_size": str(row.size),
        "recorded_at": recorded_at(row.mtime),
    }
    uniqueid = link.uniqueid if link else row.uniqueid
    if uniqueid:
        fields["uniqueid"] = fields["call_id"] = uniqueid
    linked = {
        "linkedid": link.linkedid if link else row.linkedid,
        "src_number": link.src_number if link else None,
        "dst_number": link.dst_number if link else None,
        "calldate": link.calldate if link else None,
        "duration": str(link.duration) if link and link.duration is not None else None,
    }
    fields.update({key: value for key, value in linked.items() if value})
    return fields


def delete_uploaded(row: RecordingRow, watch_paths: Sequence[Path]) -> str | None:
    """Delete an uploaded file if it is inside a watch path and unchanged; else say why not."""
    path = Path(row.path)
    try:
        real = path.resolve(strict=True)
        status = path.lstat()
    except (OSError, RuntimeError):
        return "it is gone already"
    roots = [root.resolve() for root in watch_paths]
    if real != path or not is_within(real, roots):
        return f"{str(real)!r} is not inside RECORDING_WATCH_PATHS"
    if not stat.S_ISREG(status.st_mode) or (status.st_size, status.st_mtime) != (row.size, row.mtime):
        return "it changed after the upload"
    try:
        path.unlink()
    except OSError as error:
        return f"cannot delete it: {error.strerror or error}"
    return None
