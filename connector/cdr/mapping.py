"""AMI Cdr headers → the API's CDR object (README: "What each CDR becomes"). Pure functions, never raising."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from connector.cdr.identity import event_id, linked_id
from connector.cdr.raw import raw_object
from connector.cdr.times import resolve_zone, to_utc_iso
from connector.outbox.records import CdrRow, Headers

if TYPE_CHECKING:
    from connector.config import Settings

_DIGITS = re.compile(r"\s*([0-9]+)\s*")
# Only dial-string characters: a CallerID made of these is a number, not a name.
_NUMBER_LIKE = re.compile(r"[0-9+*#\s().-]*")
_CHANNEL_ID = re.compile(r"-[0-9a-fA-F]+$")

# API field → AMI header, for the fields copied as received.
_STRING_FIELDS: tuple[tuple[str, str], ...] = (
    ("uniqueid", "UniqueID"),
    ("call_id", "UniqueID"),
    ("src", "Source"),
    ("src_number", "Source"),
    ("clid", "CallerID"),
    ("dst", "Destination"),
    ("dst_number", "Destination"),
    ("dcontext", "DestinationContext"),
    ("channel", "Channel"),
    ("dstchannel", "DestinationChannel"),
    ("lastapp", "LastApplication"),
    ("lastdata", "LastData"),
    ("disposition", "Disposition"),
    ("amaflags", "AMAFlags"),
    ("accountcode", "AccountCode"),
    ("userfield", "UserField"),
)
_TIME_FIELDS: tuple[tuple[str, str], ...] = (
    ("calldate", "StartTime"),
    ("started_at", "StartTime"),
    ("answered_at", "AnswerTime"),
    ("ended_at", "EndTime"),
)
_INT_FIELDS: tuple[tuple[str, str], ...] = (
    ("duration", "Duration"),
    ("billsec", "BillableSeconds"),
    ("sequence", "Sequence"),
)


@dataclass(frozen=True)
class MappingOptions:
    """What the mapping needs from the settings: the PBX's zone and the internal-extension rule."""

    zone: tzinfo
    internal_pattern: re.Pattern[str]


def mapping_options(settings: Settings) -> MappingOptions:
    """Build the mapping options from the settings (ASTERISK_TZ, CDR_INTERNAL_PATTERN)."""
    return MappingOptions(
        zone=resolve_zone(settings.asterisk_tz),
        internal_pattern=re.compile(settings.cdr_internal_pattern),
    )


def parse_int(value: str | None) -> int | None:
    """Read whole seconds; empty, signed, fractional or non-numeric → None (unknown)."""
    if value is None:
        return None
    match = _DIGITS.fullmatch(value)
    # Beyond 18 digits no value is a real duration (and Python refuses int() past 4,300 digits).
    return int(match[1]) if match and len(match[1]) <= 18 else None


def caller_name(clid: str) -> str | None:
    """Return the name part of a CallerID (`"Alice" <100>` → Alice); None when there is none."""
    text = clid.strip()
    if text.endswith(">") and "<" in text:
        text = text[: text.rindex("<")].strip()
    elif _NUMBER_LIKE.fullmatch(text):
        return None
    # Asterisk writes `"name" <num>` without escaping quotes inside the name: drop one outer pair.
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return text or None


def channel_peer(channel: str) -> str:
    """Return the endpoint part of a channel name (`PJSIP/1001-0000002a` → 1001; '' if none)."""
    _tech, slash, resource = channel.strip().partition("/")
    if not slash:
        return ""
    resource = resource.split(";", 1)[0]  # Local/101@lab-00000002;2 → Local/101@lab-00000002
    resource = _CHANNEL_ID.sub("", resource)
    return resource.split("@", 1)[0]  # Local channels: exten@context


def is_internal(value: str, pattern: re.Pattern[str]) -> bool:
    """Tell whether a number is an internal extension: the whole trimmed value matches."""
    text = value.strip()
    return bool(text) and pattern.fullmatch(text) is not None


def direction(fields: Mapping[str, str], pattern: re.Pattern[str]) -> str:
    """Classify a CDR as internal, outbound or inbound (README: "Direction")."""
    from_inside = is_internal(fields.get("Source", ""), pattern) or is_internal(
        channel_peer(fields.get("Channel", "")), pattern
    )
    to_inside = is_internal(fields.get("Destination", ""), pattern) or is_internal(
        channel_peer(fields.get("DestinationChannel", "")), pattern
    )
    if from_inside:
        return "internal" if to_inside else "outbound"
    return "inbound"


def map_cdr(headers: Headers, cdr_event_id: str, options: MappingOptions) -> dict[str, Any]:
    """Build the API's CDR object from ordered headers (see map_raw)."""
    return map_raw(raw_object(headers), cdr_event_id, options)


def map_raw(raw: Mapping[str, str], cdr_event_id: str, options: MappingOptions) -> dict[str, Any]:
    """Build the API's CDR object from the stored raw object; unknown values are omitted, never null.

    The raw object serves as the fields too: a header's first value is under its own name.
    """
    fields = raw
    cdr: dict[str, Any] = {"event_id": cdr_event_id}
    for key, header in _STRING_FIELDS:
        if header in fields:
            cdr[key] = fields[header]
    linkedid = linked_id(fields)
    if linkedid:
        cdr["linkedid"] = linkedid
    name = caller_name(fields.get("CallerID", ""))
    if name is not None:
        cdr["src_name"] = name
    for key, header in _TIME_FIELDS:
        converted = to_utc_iso(fields.get(header, ""), options.zone)
        if converted is not None:
            cdr[key] = converted
    for key, header in _INT_FIELDS:
        number = parse_int(fields.get(header))
        if number is not None:
            cdr[key] = number
    cdr["direction"] = direction(fields, options.internal_pattern)
    cdr["raw"] = dict(raw)
    return cdr


def cdr_payload(row: CdrRow, options: MappingOptions) -> dict[str, Any]:
    """Map a stored row, with the event_id derived from its dedupe key."""
    return map_raw(row.raw, event_id(row.dedupe_key), options)
