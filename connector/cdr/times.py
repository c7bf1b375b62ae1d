"""Asterisk's local, offset-less CDR times → UTC ISO-8601 with `Z`; a usegmtime Master.csv's UTC → local."""

from __future__ import annotations

import functools
import os
import re
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo

_LOCALTIME = Path("/etc/localtime")
_TIME = re.compile(
    r"\s*(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[ T](?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?)\s*"
)


def resolve_zone(name: str) -> tzinfo:
    """Return the zone named by ASTERISK_TZ; '' means this machine's local zone."""
    if name.strip():
        return ZoneInfo(name.strip())
    return local_zone()


def local_zone() -> tzinfo:
    """Return the local zone with its DST rules: $TZ, else /etc/localtime, else UTC (as libc does)."""
    env = os.environ.get("TZ", "").strip().removeprefix(":")
    if env:
        zone = _zone_or_none(env)
        if zone is not None:
            return zone
    return _zone_file_or_none(_LOCALTIME) or UTC


def _zone_or_none(name: str) -> tzinfo | None:
    if name.startswith("/"):
        return _zone_file_or_none(Path(name))
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return None


def _zone_file_or_none(path: Path) -> tzinfo | None:
    try:
        with path.open("rb") as data:
            return ZoneInfo.from_file(data, key=str(path))
    except (OSError, ValueError):
        return None


@functools.lru_cache(maxsize=8192)
def to_utc_iso(value: str, zone: tzinfo) -> str | None:
    """Convert `YYYY-MM-DD HH:MM:SS` in `zone` to `YYYY-MM-DDTHH:MM:SSZ`; None if not a time.

    An ambiguous local time (the repeated hour when DST ends) is read as its first occurrence
    (fold=0, the earlier instant). A non-existent one (the hour skipped when DST starts) is read
    with the offset in force before the gap, which lands it as far past the gap as it was into it
    (02:30 in a 02:00→03:00 gap becomes 03:30 local time).

    Cached: the legs of a call share their times, and a batch maps hundreds of CDRs at once.
    """
    match = _TIME.fullmatch(value)
    if match is None:
        return None
    try:
        naive = datetime.fromisoformat(f"{match['date']}T{match['time']}")
        instant = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return instant.replace(tzinfo=None).isoformat() + "Z"


_CSV_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")


@functools.lru_cache(maxsize=8192)
def utc_to_local_text(value: str, zone: tzinfo) -> str | None:
    """Convert a UTC `YYYY-MM-DD HH:MM:SS` to the same form in `zone`; '' stays ''; None if not a time.

    For Master.csv written with cdr.conf `[csv] usegmtime = yes`: the result is the wall-clock
    text Asterisk puts in the AMI Cdr event of the same CDR. This direction is never ambiguous: in
    the hour repeated when DST ends, two UTC instants simply give the same local text, as they do
    in the AMI event.

    Cached: the legs of a call share their times, and a backfill converts three per line.
    """
    if not value:
        return ""
    if _CSV_TIME.fullmatch(value) is None:
        return None
    try:
        instant = datetime.fromisoformat(value).replace(tzinfo=UTC)
        return instant.astimezone(zone).replace(tzinfo=None).isoformat(sep=" ")
    except (ValueError, OverflowError):
        return None
