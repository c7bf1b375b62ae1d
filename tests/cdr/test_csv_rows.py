"""Master.csv rows → AMI-named headers, for gap recovery."""

from __future__ import annotations

import pytest

from connector.cdr.csv_rows import (
    CSV_LAYOUT_FIELDS,
    MalformedRow,
    parse_layout,
    parse_line,
    row_headers,
)
from tests.cdr.helpers import CUSTOM_LAYOUT, csv_rows, paired_ami


def test_csv_layout_is_cdr_csv_columns() -> None:
    assert len(CSV_LAYOUT_FIELDS) == 18
    assert parse_layout("csv") == (
        "AccountCode", "Source", "Destination", "DestinationContext", "CallerID", "Channel",
        "DestinationChannel", "LastApplication", "LastData", "StartTime", "AnswerTime",
        "EndTime", "Duration", "BillableSeconds", "Disposition", "AMAFlags", "UniqueID",
        "UserField",
    )  # fmt: skip


def test_custom_layout_maps_names_and_accepts_explicit_headers() -> None:
    assert parse_layout(" src , LinkedID,sequence,peeraccount ") == (
        "Source",
        "LinkedID",
        "Sequence",
        "PeerAccount",
    )
    assert parse_layout("uniqueid,mycode=MyCode") == ("UniqueID", "MyCode")


@pytest.mark.parametrize("spec", ["", " , ", "src,nonsense", "src,dst,src"])
def test_bad_layouts_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_layout(spec)


def test_every_paired_row_parses_and_matches_its_ami_values() -> None:
    master = csv_rows("Master.csv", "csv")
    custom = csv_rows("custom-Master.csv", CUSTOM_LAYOUT)
    ami = {(dict(e)["UniqueID"], dict(e)["Sequence"]): dict(e) for e in paired_ami()}
    matched = 0
    for master_row, custom_row in zip(master, custom, strict=True):
        custom_fields = dict(custom_row)
        event = ami.get((custom_fields["UniqueID"], custom_fields["Sequence"]))
        if event is None:
            continue
        matched += 1
        # README: every column equals the event's value, CallerID quoting included.
        assert all(event[name] == value for name, value in custom_row)
        assert all(event[name] == value for name, value in master_row)
    assert matched == 57


def test_doubled_quotes_and_empty_answer_time() -> None:
    line = (
        '"","","103","lab",""""" <>","Local/103@lab-00000020;2","","Busy","10",'
        '"2026-11-26 23:30:15",,"2026-11-26 23:30:15",0,0,"BUSY","DOCUMENTATION",'
        '"1795735815.123",""'
    )
    fields = dict(row_headers(parse_line(line), parse_layout("csv")))
    assert fields["CallerID"] == '"" <>'
    assert fields["AnswerTime"] == ""
    assert fields["Duration"] == "0"
    assert fields["UniqueID"] == "1795735815.123"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('"a","b', "quoting"),
        ('"a"x,"b"', "quoting"),
        ('"1","2"', "columns"),
    ],
)
def test_malformed_lines(line: str, problem: str) -> None:
    with pytest.raises(MalformedRow, match=problem):
        row_headers(parse_line(line), parse_layout("csv"))


@pytest.mark.parametrize(
    ("start", "answer", "end"),
    [
        ("2026-11-26", "", "2026-11-26 23:30:15"),
        ("2026-11-26 23:30:15", "yesterday", "2026-11-26 23:30:15"),
        ("2026-11-26 23:30:15", "", ""),
    ],
)
def test_bad_dates_are_malformed(start: str, answer: str, end: str) -> None:
    layout = parse_layout("uniqueid,start,answer,end")
    with pytest.raises(MalformedRow, match="YYYY-MM-DD"):
        row_headers(["1.1", start, answer, end], layout)


def test_layout_without_times_is_not_checked_for_them() -> None:
    assert row_headers(["1.1", "x"], parse_layout("uniqueid,src")) == (
        ("UniqueID", "1.1"),
        ("Source", "x"),
    )
