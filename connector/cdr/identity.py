"""CDR identity: the dedupe key's hash, the frame fingerprint and the event_id sent to the API.

These hashes are part of the stored data and of what the API sees: changing any of them would make
every stored row look new and every re-sent CDR get a new event_id. Never change the encoding.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from json.encoder import encode_basestring

HASH_HEX_CHARS = 32  # 128 bits: collisions are out of reach for any CDR volume

# The fields that both the AMI Cdr event and Asterisk's CSV backends carry (README, "CDR identity
# (for deduplication and gap recovery)").
# Optional mapped headers (LinkedID, Sequence, ...) are not in it: cdr_csv has no such columns.
CANONICAL_FIELDS: tuple[str, ...] = (
    "UniqueID",
    "Channel",
    "DestinationChannel",
    "Source",
    "Destination",
    "DestinationContext",
    "StartTime",
    "AnswerTime",
    "EndTime",
    "Duration",
    "BillableSeconds",
    "Disposition",
    "LastApplication",
    "LastData",
    "AccountCode",
    "AMAFlags",
    "UserField",
)

_EVENT_ID_DOMAIN = "sipstack-connector-asterisk/cdr-event/v1\n"
# The JSON string encoder json.dumps(..., ensure_ascii=False) itself uses (its C version).
_string = encode_basestring


def first_wins(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Turn ordered headers into a dict, keeping the first value of a repeated name."""
    result: dict[str, str] = {}
    for name, value in headers:
        result.setdefault(name, value)
    return result


# cdr_manager's [mappings] names the header as the site wrote it; these are the spellings seen in use.
LINKEDID_HEADERS = ("LinkedID", "Linkedid", "linkedid")


def linked_id(fields: Mapping[str, str]) -> str:
    """The call's LinkedID from a CDR's fields, trimmed; '' when cdr_manager does not map it."""
    return next((value.strip() for name in LINKEDID_HEADERS if (value := fields.get(name, "")).strip()), "")


def _digest(text: str) -> str:
    # surrogatepass: a lone surrogate must hash (deterministically), never raise.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:HASH_HEX_CHARS]


def canonical_values(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> list[str]:
    """Return the canonical field values in CANONICAL_FIELDS order; a missing header is ''."""
    fields = headers if isinstance(headers, Mapping) else first_wins(headers)
    # Surrounding whitespace is trimmed so that an AMI parser that strips values and one that
    # keeps them, and the CSV reader, all agree.
    return [str(fields.get(name, "")).strip() for name in CANONICAL_FIELDS]


def canonical_identity(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """Hash the canonical CDR fields: the same CDR over AMI or from Master.csv gets the same value."""
    return identity_of_values(canonical_values(headers))


def identity_of_values(values: Sequence[str]) -> str:
    """Hash canonical values given in CANONICAL_FIELDS order, already stripped (the CSV fast path)."""
    # A JSON list is an unambiguous encoding: no separator can be forged by a field's content.
    return _digest("[" + ", ".join(map(_string, values)) + "]")


def headers_json(headers: Iterable[tuple[str, str]]) -> str:
    """Encode ordered headers as a JSON array of [name, value] pairs (what the fingerprint hashes).

    Byte for byte what json.dumps(..., ensure_ascii=False) gives, at half the cost: this runs for
    every Cdr frame on the reading thread.
    """
    return "[" + ", ".join(f"[{_string(name)}, {_string(value)}]" for name, value in headers) + "]"


def fingerprint_of_json(encoded_headers: str) -> str:
    """The frame fingerprint from headers encoded by headers_json: equal only for identical frames."""
    return _digest(encoded_headers)


def dedupe_key(identity: str, occurrence: int) -> str:
    """Build the stored dedupe key: the n-th CDR with the same identity from one source is `#n`."""
    return f"{identity}#{occurrence}"


def event_id(dedupe_key: str) -> str:
    """Derive the event_id sent to the API: the same dedupe key always gives the same id."""
    return _digest(_EVENT_ID_DOMAIN + dedupe_key)
