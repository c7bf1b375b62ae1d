"""CANCEL (cdr.conf canceldispositionenabled=yes, Asterisk 20.16+/21.11+/22.6+) is "not answered" everywhere.

The material is the real `variants/cancel/` captures of Asterisk 20.20.1 and 22.10.1: five calls given up
while the callee still rang. An older Asterisk writes NO ANSWER for the same legs, so every rule must
treat a CANCEL CDR exactly as the same CDR with NO ANSWER.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC

import pytest

from connector.cdr.filters import QUEUE_ATTEMPT, ZERO_DURATION, FilterRules, filter_reason
from connector.cdr.mapping import MappingOptions, map_cdr
from connector.outbox.records import Headers
from tests.cdr.helpers import ami_cdrs
from tests.paths import VERSION_FIXTURES

UTC_OPTIONS = MappingOptions(zone=UTC, internal_pattern=re.compile(r"^[0-9]{2,6}$"))
CANCEL_VERSIONS = ("20.20.1", "22.10.1")  # 16 and 18 have no such option
RULE_SETS = {
    "defaults": FilterRules(),
    "queue attempts": FilterRules(queue_attempts=True, exclude_dst=frozenset({"h", "s"})),
    "zero duration": FilterRules(zero_duration=True),
    "min duration 5": FilterRules(min_duration_s=5),
    "internal only": FilterRules(internal_only=True),
    "everything": FilterRules(queue_attempts=True, zero_duration=True, min_duration_s=5, internal_only=True),
}


def cancel_cdrs(version: str) -> list[Headers]:
    return ami_cdrs(VERSION_FIXTURES / version / "variants" / "cancel" / "ami-session.txt")


def as_no_answer(headers: Headers) -> Headers:
    """The same CDR as an Asterisk without canceldispositionenabled writes it."""
    return tuple((name, "NO ANSWER" if name == "Disposition" else value) for name, value in headers)


def disposition(headers: Headers) -> str:
    return dict(headers)["Disposition"]


@pytest.mark.parametrize("version", CANCEL_VERSIONS)
def test_the_real_captures_hold_cancelled_legs(version: str) -> None:
    dispositions = [disposition(headers) for headers in cancel_cdrs(version)]
    assert len(dispositions) == 26
    assert dispositions.count("CANCEL") == 4  # the Dial/Queue CDRs of the four calls given up


@pytest.mark.parametrize("rules", RULE_SETS.values(), ids=RULE_SETS.keys())
@pytest.mark.parametrize("version", CANCEL_VERSIONS)
def test_every_filter_treats_cancel_as_no_answer(version: str, rules: FilterRules) -> None:
    for headers in cancel_cdrs(version):
        if disposition(headers) == "CANCEL":
            assert filter_reason(headers, rules) == filter_reason(as_no_answer(headers), rules), headers


@pytest.mark.parametrize("disposition_text", ["CANCEL", "cancel", " CANCEL "])
def test_a_cancelled_queue_attempt_is_a_queue_attempt(disposition_text: str) -> None:
    attempt = {"Destination": "s", "Disposition": disposition_text, "Duration": "0", "BillableSeconds": "0"}
    assert filter_reason(attempt, FilterRules(queue_attempts=True)) == QUEUE_ATTEMPT
    # Answered with a duration it is a real call, whatever the rule.
    answered = attempt | {"Disposition": "ANSWERED", "Duration": "30", "BillableSeconds": "30"}
    assert filter_reason(answered, FilterRules(queue_attempts=True)) is None


def test_a_cancelled_h_cdr_without_duration_is_excluded_and_zero_duration_drops_cancel() -> None:
    h_cdr = {"Destination": "h", "Disposition": "CANCEL", "Duration": "0", "BillableSeconds": "0"}
    assert filter_reason(h_cdr, FilterRules()) == "exclude_dst"
    other = h_cdr | {"Destination": "201"}
    assert filter_reason(other, FilterRules()) is None
    assert filter_reason(other, replace(FilterRules(), zero_duration=True)) == ZERO_DURATION


@pytest.mark.parametrize("version", CANCEL_VERSIONS)
def test_a_cancel_cdr_maps_as_not_answered(version: str) -> None:
    cancelled = [headers for headers in cancel_cdrs(version) if disposition(headers) == "CANCEL"]
    for headers in cancelled:
        cdr = map_cdr(headers, "ev", UTC_OPTIONS)
        assert cdr["disposition"] == "CANCEL"
        assert "answered_at" not in cdr  # never answered: AnswerTime is empty
        assert cdr["billsec"] == 0 and cdr["duration"] == 3
        assert cdr["direction"] == map_cdr(as_no_answer(headers), "ev", UTC_OPTIONS)["direction"]
