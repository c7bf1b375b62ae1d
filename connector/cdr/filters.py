"""CDR filters (CDR_FILTER_*): which stored CDRs are never sent, and why. Pure functions.

The rules are checked in this order and the first that matches names the reason; README's "Filters"
section states them in the same words. Values are compared after trimming surrounding spaces;
Disposition case-insensitively, Destination exactly. An empty or non-numeric Duration/BillableSeconds
is unknown, and an unknown number never makes a rule match (a filter only drops what it is sure about).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from connector.cdr.identity import first_wins
from connector.cdr.mapping import is_internal, parse_int

if TYPE_CHECKING:
    from connector.config import Settings

# The reasons, as stored in the row and used as the metric label `reason`.
EXCLUDE_DST = "exclude_dst"
QUEUE_ATTEMPT = "queue_attempt"
ZERO_DURATION = "zero_duration"
MIN_DURATION = "min_duration"
NOT_INTERNAL = "not_internal"
REASONS = (EXCLUDE_DST, QUEUE_ATTEMPT, ZERO_DURATION, MIN_DURATION, NOT_INTERNAL)

_KEPT_WITHOUT_DURATION = frozenset({"BUSY", "FAILED", "CONGESTION"})
# A leg that rang and was not answered: NO ANSWER, or CANCEL when the caller hung up first and
# cdr.conf has canceldispositionenabled=yes (Asterisk 20.16+, 21.11+, 22.6+; older lines write
# NO ANSWER for the same call), so the same call is filtered alike on every version.
_RANG_UNANSWERED = frozenset({"NO ANSWER", "CANCEL"})


@dataclass(frozen=True)
class FilterRules:
    """The filter settings, ready to apply."""

    enabled: bool = True
    exclude_dst: frozenset[str] = frozenset({"h"})
    queue_attempts: bool = False
    zero_duration: bool = False
    min_duration_s: int = 0
    internal_only: bool = False
    internal_pattern: re.Pattern[str] = re.compile(r"^[0-9]{2,6}$")


def filter_rules(settings: Settings) -> FilterRules:
    """Build the filter rules from the settings (CDR_FILTER_*, CDR_INTERNAL_PATTERN)."""
    return FilterRules(
        enabled=settings.cdr_filter_enabled,
        exclude_dst=frozenset(settings.cdr_filter_exclude_dst),
        queue_attempts=settings.cdr_filter_queue_attempts,
        zero_duration=settings.cdr_filter_zero_duration,
        min_duration_s=settings.cdr_filter_min_duration,
        internal_only=settings.cdr_filter_internal_only,
        internal_pattern=re.compile(settings.cdr_internal_pattern),
    )


def filter_reason(headers: Mapping[str, str] | Iterable[tuple[str, str]], rules: FilterRules) -> str | None:
    """Return why this CDR must not be sent (one of REASONS), or None to send it."""
    if not rules.enabled:
        return None
    fields = headers if isinstance(headers, Mapping) else first_wins(headers)
    dst = fields.get("Destination", "").strip()
    disposition = fields.get("Disposition", "").strip().upper()
    duration = parse_int(fields.get("Duration"))
    billsec = parse_int(fields.get("BillableSeconds"))
    unanswered_and_empty = disposition != "ANSWERED" and duration == 0
    if dst in rules.exclude_dst and unanswered_and_empty:
        return EXCLUDE_DST
    if rules.queue_attempts and dst == "s" and disposition in _RANG_UNANSWERED and duration == 0:
        return QUEUE_ATTEMPT
    if rules.zero_duration and duration == 0 and billsec == 0:
        if disposition not in _KEPT_WITHOUT_DURATION:
            return ZERO_DURATION
    if rules.min_duration_s > 0 and duration is not None and duration < rules.min_duration_s:
        return MIN_DURATION
    if rules.internal_only:
        src = fields.get("Source", "")
        if not (is_internal(src, rules.internal_pattern) and is_internal(dst, rules.internal_pattern)):
            return NOT_INTERNAL
    return None
