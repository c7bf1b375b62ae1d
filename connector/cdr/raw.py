"""The stored form of a CDR's headers: one JSON object, every header in AMI order, none lost.

A header name that repeats keeps its first value under its own name, so `raw ->> '$.Name'` and every
field lookup see the first value (as the AMI parser and the CSV reader do); the second value is
stored as `Name#2`, the third as `Name#3`, each where it arrived. The same object is what the API
receives as `raw`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from json.encoder import encode_basestring

# The JSON string encoder json.dumps(..., ensure_ascii=False) itself uses (its C version).
_string = encode_basestring
_REPEAT_SUFFIX = re.compile(r"#[0-9]+\Z")

Headers = tuple[tuple[str, str], ...]  # the same as connector.outbox.records.Headers


def raw_object(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Every header as a JSON-ready dict, in order; a repeated name gets `#2`, `#3`, ... appended."""
    raw: dict[str, str] = {}
    for name, value in headers:
        key, occurrence = name, 1
        while key in raw:
            occurrence += 1
            key = f"{name}#{occurrence}"
        raw[key] = value
    return raw


def raw_json(headers: Headers) -> str:
    """Encode headers as the stored `raw` object: what json.dumps(raw_object(headers)) gives, compact.

    Built by hand because it runs for every Cdr frame on the reading thread.
    """
    names = [name for name, _ in headers]
    if len(set(names)) != len(names):
        return json.dumps(raw_object(headers), ensure_ascii=False, separators=(",", ":"))
    return "{" + ",".join(f"{_string(name)}:{_string(value)}" for name, value in headers) + "}"


def headers_of_raw(raw: Mapping[str, str]) -> Headers:
    """The headers a raw object was made from: `Name#n` after a `Name` is that header again."""
    headers: list[tuple[str, str]] = []
    seen: set[str] = set()
    for key, value in raw.items():
        name = _REPEAT_SUFFIX.sub("", key)
        if name == key or name not in seen:
            name = key
        seen.add(name)
        headers.append((name, value))
    return tuple(headers)
