"""AMI Cdr headers → the API's CDR object (README: "What each CDR becomes")."""

from __future__ import annotations

import dataclasses
import json
import re
from datetime import UTC, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.cdr.filters import REASONS, FilterRules, filter_reason
from connector.cdr.mapping import (
    MappingOptions,
    caller_name,
    cdr_payload,
    channel_peer,
    direction,
    map_cdr,
    mapping_options,
    parse_int,
)
from connector.cdr.raw import raw_object
from connector.config import load_settings
from connector.demo.receiver_state import cdr_problem
from connector.outbox.records import CdrRow, Headers
from tests.cdr.helpers import all_fixture_cdrs, paired_ami

INTERNAL = re.compile(r"^[0-9]{2,6}$")
OPTIONS = MappingOptions(zone=UTC, internal_pattern=INTERNAL)
CONTRACT_FIELDS = {
    "event_id", "uniqueid", "call_id", "linkedid", "sequence", "src", "src_number", "src_name",
    "clid", "dst", "dst_number", "dcontext", "channel", "dstchannel", "lastapp", "lastdata",
    "calldate", "started_at", "answered_at", "ended_at", "duration", "billsec", "disposition",
    "amaflags", "accountcode", "userfield", "direction", "raw",
}  # fmt: skip


def test_first_paired_cdr_maps_to_every_contract_field() -> None:
    cdr = map_cdr(paired_ami()[0], "ev-1", OPTIONS)
    assert cdr == {
        "event_id": "ev-1",
        "uniqueid": "1795735698.1",
        "call_id": "1795735698.1",
        "src": "5550100",
        "src_number": "5550100",
        "clid": '"Lab Answered" <5550100>',
        "dst": "100",
        "dst_number": "100",
        "dcontext": "lab",
        "channel": "Local/100@lab-00000000;2",
        "dstchannel": "",
        "lastapp": "Hangup",
        "lastdata": "",
        "disposition": "ANSWERED",
        "amaflags": "DOCUMENTATION",
        "accountcode": "lab-acct-100",
        "userfield": "scenario=answered",
        "linkedid": "1795735698.0",
        "src_name": "Lab Answered",
        "calldate": "2026-11-26T23:28:18Z",
        "started_at": "2026-11-26T23:28:18Z",
        "answered_at": "2026-11-26T23:28:18Z",
        "ended_at": "2026-11-26T23:28:21Z",
        "duration": 3,
        "billsec": 3,
        "sequence": 1,
        "direction": "internal",
        "raw": dict(paired_ami()[0]),
    }
    assert set(cdr) == CONTRACT_FIELDS


@pytest.mark.parametrize("index", range(len(all_fixture_cdrs())))
def test_every_fixture_cdr_maps_to_a_valid_contract_object(index: int) -> None:
    headers = all_fixture_cdrs()[index]
    cdr = map_cdr(headers, f"ev-{index}", OPTIONS)
    assert cdr_problem(cdr) is None
    assert cdr["raw"] == dict(headers)
    assert list(cdr["raw"]) == [name for name, _ in headers]
    fields = dict(headers)
    assert cdr["started_at"] == fields["StartTime"].replace(" ", "T") + "Z"
    assert ("answered_at" in cdr) == (fields["AnswerTime"] != "")
    assert cdr["duration"] == int(fields["Duration"])
    assert ("sequence" in cdr) == ("Sequence" in fields)
    assert json.loads(json.dumps(cdr)) == cdr


def test_times_use_the_configured_zone() -> None:
    options = MappingOptions(zone=ZoneInfo("America/Toronto"), internal_pattern=INTERNAL)
    cdr = map_cdr(paired_ami()[0], "ev", options)
    assert cdr["started_at"] == "2026-11-27T04:28:18Z"  # EST is UTC-5 in November
    assert cdr["calldate"] == cdr["started_at"]


@pytest.mark.parametrize("value", ["", " ", "abc", "3.5", "-3", "+3", "٣", "1e3"])
def test_unknown_numbers_are_absent_never_null(value: str) -> None:
    headers: Headers = (("Duration", value), ("BillableSeconds", value), ("Sequence", value))
    cdr = map_cdr(headers, "ev", OPTIONS)
    assert not {"duration", "billsec", "sequence"} & set(cdr)
    assert None not in cdr.values()


def test_missing_headers_are_absent_and_empty_times_too() -> None:
    cdr = map_cdr((("AnswerTime", ""), ("LinkedID", "")), "ev", OPTIONS)
    assert set(cdr) == {"event_id", "direction", "raw"}


@pytest.mark.parametrize(("value", "number"), [("0", 0), ("45", 45), (" 7 ", 7), ("0012", 12), (None, None)])
def test_parse_int(value: str | None, number: int | None) -> None:
    assert parse_int(value) == number


@pytest.mark.parametrize(
    ("clid", "name"),
    [
        ('"Alice" <100>', "Alice"),
        ("Alice <100>", "Alice"),
        ('"" <>', None),
        ("<100>", None),
        ("", None),
        ("100", None),
        ("+1 (555) 010-0100", None),
        ("Alice", "Alice"),
        ('"Alice"', "Alice"),
        ('"O\'Brien, Máire" <1001>', "O'Brien, Máire"),
        ('"Say "hi" Bob" <1002>', 'Say "hi" Bob'),
        ('"José 🙂" <1003>', "José 🙂"),
        ('"Lab <test>" <5550100>', "Lab <test>"),
        ("'Quoted' <1>", "'Quoted'"),
        ('"  spaced  " <1>', "  spaced  "),
    ],
)
def test_caller_name(clid: str, name: str | None) -> None:
    assert caller_name(clid) == name


@pytest.mark.parametrize(
    ("channel", "peer"),
    [
        ("PJSIP/1001-0000002a", "1001"),
        ("SIP/trunk-provider-0000abcd", "trunk-provider"),
        ("Local/101@lab-00000002;2", "101"),
        ("Local/1001@phones-0000001d;1", "1001"),
        ("DAHDI/1-1", "1"),
        ("IAX2/office", "office"),
        ("", ""),
        ("nonsense", ""),
    ],
)
def test_channel_peer(channel: str, peer: str) -> None:
    assert channel_peer(channel) == peer


@pytest.mark.parametrize(
    ("src", "channel", "dst", "dstchannel", "expected"),
    [
        ("1001", "PJSIP/1001-00000001", "1002", "PJSIP/1002-00000002", "internal"),
        ("1001", "PJSIP/1001-00000001", "600", "", "internal"),  # ring group number
        ("1001", "PJSIP/1001-00000001", "0033123456789", "PJSIP/trunk-00000002", "outbound"),
        ("5145550100", "PJSIP/1001-00000001", "0033123456789", "PJSIP/trunk-2", "outbound"),
        ("+15145550100", "PJSIP/trunk-00000001", "1001", "PJSIP/1001-00000002", "inbound"),
        ("+15145550100", "PJSIP/trunk-00000001", "s", "PJSIP/1001-00000002", "inbound"),
        ("+15145550100", "PJSIP/trunk-00000001", "s", "", "inbound"),
        ("", "Local/1001@phones-0000001d;1", "200", "Local/101@lab-0000001e;1", "internal"),
        ("", "", "", "", "inbound"),
    ],
)
def test_direction(src: str, channel: str, dst: str, dstchannel: str, expected: str) -> None:
    fields = {"Source": src, "Channel": channel, "Destination": dst}
    fields["DestinationChannel"] = dstchannel
    assert direction(fields, INTERNAL) == expected


def test_direction_follows_the_configured_pattern() -> None:
    fields = {"Source": "+15145550100", "Destination": "4000", "Channel": "PJSIP/trunk-1"}
    assert direction(fields, re.compile(r"^[0-9]{2,6}$")) == "inbound"
    assert direction(fields, re.compile(r"^\+1514555[0-9]{4}$")) == "outbound"


def test_repeated_header_names_keep_every_value() -> None:
    headers: Headers = (("Source", "1"), ("X", "a"), ("Source", "2"), ("Source", "3"))
    assert raw_object(headers) == {"Source": "1", "X": "a", "Source#2": "2", "Source#3": "3"}
    assert map_cdr(headers, "ev", OPTIONS)["src"] == "1"
    tricky: Headers = (("A", "1"), ("A#2", "x"), ("A", "2"))
    assert raw_object(tricky) == {"A": "1", "A#2": "x", "A#3": "2"}


def test_mapping_options_and_payload_from_settings(clean_env: Path) -> None:
    settings = load_settings(asterisk_tz="America/Toronto", cdr_internal_pattern=r"^1[0-9]{3}$")
    options = mapping_options(settings)
    assert options.zone == ZoneInfo("America/Toronto")
    headers = paired_ami()[0]
    # Every other column of the row is irrelevant to the mapping (and may grow).
    blank: dict[str, Any] = {field.name: None for field in dataclasses.fields(CdrRow)}
    row = CdrRow(**blank | {"id": 1, "dedupe_key": "abc#1", "raw": raw_object(headers), "attempts": 0})
    first = cdr_payload(row, options)
    assert first == cdr_payload(row, options)
    assert first["direction"] == "inbound"  # 5550100 and exten 100 are not 1xxx
    assert first["event_id"] == cdr_payload(row, options)["event_id"] != "abc#1"


header_names = st.one_of(
    st.sampled_from(
        ["Source", "Destination", "CallerID", "Channel", "DestinationChannel", "StartTime",
         "AnswerTime", "EndTime", "Duration", "BillableSeconds", "Disposition", "Sequence",
         "LinkedID", "UniqueID"]
    ),
    st.text(),
)  # fmt: skip
header_values = st.one_of(
    st.text(),
    st.from_regex(r"\A[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}\Z"),
    st.from_regex(r"\A[0-9]{0,25}\Z"),
    st.sampled_from(["ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION", "s", "h"]),
)
zones = st.sampled_from([UTC, ZoneInfo("America/New_York"), ZoneInfo("Pacific/Kiritimati")])


@given(st.dictionaries(header_names, header_values), zones)
def test_any_headers_map_and_filter_without_raising(fields: dict[str, str], zone: tzinfo) -> None:
    headers = tuple(fields.items())
    cdr = map_cdr(headers, "ev", MappingOptions(zone=zone, internal_pattern=INTERNAL))
    assert cdr["raw"] == fields
    assert list(cdr["raw"].items()) == list(headers)
    assert json.loads(json.dumps(cdr)) == cdr
    assert None not in cdr.values()
    assert cdr_problem(cdr) is None
    every_rule = FilterRules(
        exclude_dst=frozenset({"h", "s"}), queue_attempts=True, zero_duration=True,
        min_duration_s=5, internal_only=True,
    )  # fmt: skip
    for rules in (FilterRules(), every_rule, FilterRules(enabled=False)):
        assert filter_reason(headers, rules) in (None, *REASONS)
        assert filter_reason(fields, rules) == filter_reason(headers, rules)


def test_an_absurdly_long_duration_is_unknown_not_an_error() -> None:
    from connector.cdr.mapping import parse_int

    assert parse_int("9" * 5000) is None
    assert parse_int("123456789012345678") == 123456789012345678
