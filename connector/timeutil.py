"""UTC timestamps as ISO-8601 text: sortable as strings and readable in plain sqlite3."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def to_iso(moment: datetime) -> str:
    """Format an aware datetime as UTC ISO-8601 with microseconds and a `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> str:
    """The current time as UTC ISO-8601 text."""
    return to_iso(datetime.now(UTC))


def utc_in(seconds: float) -> str:
    """The time `seconds` from now as UTC ISO-8601 text."""
    return to_iso(datetime.now(UTC) + timedelta(seconds=seconds))


def parse_iso(text: str) -> datetime:
    """Parse ISO-8601 text (with `Z`, an offset, or naive meaning UTC) into an aware datetime."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def age_seconds(iso_text: str | None) -> float:
    """Seconds elapsed since an ISO timestamp (0 for None)."""
    if not iso_text:
        return 0.0
    return max(0.0, (datetime.now(UTC) - parse_iso(iso_text)).total_seconds())
