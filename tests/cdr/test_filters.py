"""Every CDR filter rule, as README states it (table tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connector.cdr.filters import (
    EXCLUDE_DST,
    MIN_DURATION,
    NOT_INTERNAL,
    QUEUE_ATTEMPT,
    ZERO_DURATION,
    FilterRules,
    filter_reason,
    filter_rules,
)
from connector.config import load_settings
from tests.cdr.helpers import paired_ami

OFF = FilterRules(exclude_dst=frozenset())  # every rule off; tests switch one on


def cdr(dst: str = "200", disposition: str = "ANSWERED", duration: str = "45", **more: str) -> dict[str, str]:
    """A Cdr's headers with the fields the filters read."""
    billsec = more.pop("billsec", duration if disposition == "ANSWERED" else "0")
    fields = {"Source": "1001", "Destination": dst, "Disposition": disposition}
    return fields | {"Duration": duration, "BillableSeconds": billsec} | more


# The seed's three `s` examples, with `s` in CDR_FILTER_EXCLUDE_DST.
@pytest.mark.parametrize(
    ("disposition", "duration", "reason"),
    [
        ("NO ANSWER", "0", EXCLUDE_DST),  # dst=s, NO ANSWER, 0 s → filtered
        ("ANSWERED", "45", None),  # dst=s, ANSWERED, 45 s → kept
        ("BUSY", "3", None),  # dst=s, BUSY, 3 s → kept
    ],
)
def test_seed_s_examples(disposition: str, duration: str, reason: str | None) -> None:
    rules = FilterRules(exclude_dst=frozenset({"h", "s"}))
    assert filter_reason(cdr("s", disposition, duration), rules) == reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (cdr("h", "NO ANSWER", "0"), EXCLUDE_DST),
        (cdr("h", "FAILED", "0"), EXCLUDE_DST),
        (cdr("h", "BUSY", "0"), EXCLUDE_DST),  # not answered and no duration
        (cdr("h", "ANSWERED", "0"), None),  # answered: kept
        (cdr("h", "ANSWERED", "2"), None),  # fixtures/ami/h-exten.txt: kept
        (cdr("h", "NO ANSWER", "5"), None),  # has a duration: kept
        (cdr("h", "NO ANSWER", ""), None),  # unknown duration: kept
        (cdr("h", "NO ANSWER", "x"), None),
        (cdr(" h ", "no answer", " 0 "), EXCLUDE_DST),  # trimmed, disposition any case
        (cdr("H", "NO ANSWER", "0"), None),  # extensions are case-sensitive
        (cdr("s", "NO ANSWER", "0"), None),  # s is not in the default list
        (cdr("200", "NO ANSWER", "0"), None),
        ({"Disposition": "NO ANSWER", "Duration": "0"}, None),  # no Destination at all
    ],
)
def test_exclude_dst_default_list(fields: dict[str, str], reason: str | None) -> None:
    assert filter_reason(fields, FilterRules()) == reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (cdr("s", "NO ANSWER", "0"), QUEUE_ATTEMPT),
        (cdr("s", "NO ANSWER", "4"), None),
        (cdr("s", "ANSWERED", "0"), None),
        (cdr("s", "BUSY", "0"), None),
        (cdr("300", "NO ANSWER", "0"), None),
        (cdr("s", "NO ANSWER", ""), None),
    ],
)
def test_queue_attempts(fields: dict[str, str], reason: str | None) -> None:
    assert filter_reason(fields, FilterRules(exclude_dst=frozenset(), queue_attempts=True)) == reason
    assert filter_reason(fields, OFF) is None


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (cdr("200", "ANSWERED", "0", billsec="0"), ZERO_DURATION),
        (cdr("200", "NO ANSWER", "0", billsec="0"), ZERO_DURATION),
        (cdr("200", "CANCEL", "0", billsec="0"), ZERO_DURATION),
        (cdr("200", "BUSY", "0", billsec="0"), None),
        (cdr("200", "FAILED", "0", billsec="0"), None),
        (cdr("200", "CONGESTION", "0", billsec="0"), None),
        (cdr("200", "congestion", "0", billsec="0"), None),
        (cdr("200", "NO ANSWER", "5", billsec="0"), None),  # rang 5 s
        (cdr("200", "ANSWERED", "0", billsec="1"), None),
        (cdr("200", "ANSWERED", "0", billsec=""), None),  # unknown billsec
        (cdr("200", "ANSWERED", "", billsec="0"), None),
    ],
)
def test_zero_duration(fields: dict[str, str], reason: str | None) -> None:
    assert filter_reason(fields, FilterRules(exclude_dst=frozenset(), zero_duration=True)) == reason
    assert filter_reason(fields, OFF) is None


@pytest.mark.parametrize(
    ("duration", "reason"),
    [("0", MIN_DURATION), ("9", MIN_DURATION), ("10", None), ("45", None), ("", None), ("?", None)],
)
def test_min_duration(duration: str, reason: str | None) -> None:
    fields = cdr("200", "BUSY", duration)  # below N seconds, whatever the disposition
    assert filter_reason(fields, FilterRules(exclude_dst=frozenset(), min_duration_s=10)) == reason
    assert filter_reason(fields, FilterRules(exclude_dst=frozenset(), min_duration_s=0)) is None


@pytest.mark.parametrize(
    ("src", "dst", "reason"),
    [
        ("1001", "1002", None),
        ("10", "999999", None),
        ("1001", "0033123456789", NOT_INTERNAL),  # outbound
        ("+15145550100", "1001", NOT_INTERNAL),  # inbound
        ("1001", "s", NOT_INTERNAL),
        ("", "1001", NOT_INTERNAL),
        ("1", "1001", NOT_INTERNAL),  # one digit is not an extension by default
        (" 1001 ", "1002", None),
    ],
)
def test_internal_only(src: str, dst: str, reason: str | None) -> None:
    fields = cdr(dst, Source=src)
    assert filter_reason(fields, FilterRules(exclude_dst=frozenset(), internal_only=True)) == reason
    assert filter_reason(fields, OFF) is None


def test_internal_pattern_is_configurable() -> None:
    rules = FilterRules(
        exclude_dst=frozenset(), internal_only=True, internal_pattern=re.compile(r"^2[0-9]{2}$")
    )
    assert filter_reason(cdr("201", Source="200"), rules) is None
    assert filter_reason(cdr("1002", Source="1001"), rules) == NOT_INTERNAL


def test_first_matching_rule_names_the_reason() -> None:
    every = FilterRules(
        exclude_dst=frozenset({"s"}), queue_attempts=True, zero_duration=True,
        min_duration_s=5, internal_only=True,
    )  # fmt: skip
    assert filter_reason(cdr("s", "NO ANSWER", "0"), every) == EXCLUDE_DST
    assert filter_reason(cdr("s", "NO ANSWER", "0"), FilterRules(queue_attempts=True)) == (QUEUE_ATTEMPT)
    assert filter_reason(cdr("200", "ANSWERED", "0"), every) == ZERO_DURATION
    assert filter_reason(cdr("200", "ANSWERED", "3"), every) == MIN_DURATION
    assert filter_reason(cdr("0033123", "ANSWERED", "30"), every) == NOT_INTERNAL


def test_disabled_filters_keep_everything() -> None:
    rules = FilterRules(enabled=False, queue_attempts=True, zero_duration=True, internal_only=True)
    assert filter_reason(cdr("h", "NO ANSWER", "0"), rules) is None


def test_rules_from_settings(clean_env: Path) -> None:
    settings = load_settings(
        cdr_filter_exclude_dst="h, s",
        cdr_filter_queue_attempts=True,
        cdr_filter_zero_duration=True,
        cdr_filter_min_duration=3,
        cdr_filter_internal_only=True,
        cdr_internal_pattern=r"^1[0-9]{3}$",
    )
    assert filter_rules(settings) == FilterRules(
        enabled=True,
        exclude_dst=frozenset({"h", "s"}),
        queue_attempts=True,
        zero_duration=True,
        min_duration_s=3,
        internal_only=True,
        internal_pattern=re.compile(r"^1[0-9]{3}$"),
    )
    defaults = filter_rules(load_settings())
    assert defaults == FilterRules()


def test_fixture_calls_with_the_defaults() -> None:
    # Only an unanswered, zero-second CDR to `h` would go; the capture has none: all are kept.
    reasons = [filter_reason(headers, FilterRules()) for headers in paired_ami()]
    assert reasons == [None] * 57
    every = FilterRules(zero_duration=True)
    zero = [h for h in paired_ami() if filter_reason(h, every) == ZERO_DURATION]
    assert zero and all(dict(h)["Disposition"] in ("ANSWERED", "NO ANSWER") for h in zero)
