"""UTC timestamps as ISO-8601 text: sortable as strings and readable in plain sqlite3.

Every "now" of the outbox comes from here, so bench/year_bench.py can run a year of simulated days
through the real store with `set_clock`; the connector itself never sets one.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta


def _real_now() -> datetime:
    return datetime.now(UTC)


_clock: Callable[[], datetime] = _real_now


def set_clock(clock: Callable[[], datetime] | None) -> None:
    """Make `utc_now`, `utc_in` and `age_seconds` read `clock` (aware datetimes); None: the real one."""
    global _clock
    _clock = clock or _real_now


def to_iso(moment: datetime) -> str:
    """Format an aware datetime as UTC ISO-8601 with microseconds and a `Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now() -> str:
    """The current time as UTC ISO-8601 text."""
    return to_iso(_clock())


def utc_in(seconds: float) -> str:
    """The time `seconds` from now as UTC ISO-8601 text."""
    return to_iso(_clock() + timedelta(seconds=seconds))


def parse_iso(text: str) -> datetime:
    """Parse ISO-8601 text (with `Z`, an offset, or naive meaning UTC) into an aware datetime."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def age_seconds(iso_text: str | None) -> float:
    """Seconds elapsed since an ISO timestamp (0 for None)."""
    if not iso_text:
        return 0.0
    return max(0.0, (_clock() - parse_iso(iso_text)).total_seconds())
