"""Master.csv rows → AMI-named headers, for gap recovery."""

from __future__ import annotations

import pytest

from connector.cdr.csv_rows import (
    CSV_LAYOUT_FIELDS,
    LAYOUT_PRESETS,
    MalformedRow,
    parse_layout,
    parse_line,
    row_headers,
)
from tests.cdr.helpers import CUSTOM_LAYOUT, ami_cdrs, csv_rows, paired_ami
from tests.paths import ASTERISK_VERSIONS, VERSION_FIXTURES


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


# ---- presets: cdr_csv's layouts ------------------------------------------------------------------


def test_newcdrcolumns_preset_is_csv_plus_three_columns() -> None:
    assert LAYOUT_PRESETS["csv-newcdrcolumns"][:18] == CSV_LAYOUT_FIELDS
    assert parse_layout("csv-newcdrcolumns") == (
        *parse_layout("csv"),
        "PeerAccount",
        "LinkedID",
        "Sequence",
    )
    assert parse_layout(" CSV-NewCdrColumns ") == parse_layout("csv-newcdrcolumns")
    assert parse_layout("CSV") == parse_layout("csv")


@pytest.mark.parametrize("spec", ["", "bogus", "csv,linkedid", "csv-newcdrcolumn"])
def test_a_bad_layout_names_the_presets(spec: str) -> None:
    with pytest.raises(ValueError, match="csv, csv-newcdrcolumns") as caught:
        parse_layout(spec)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
def test_newcdrcolumns_rows_equal_their_ami_events(version: str) -> None:
    folder = VERSION_FIXTURES / version / "variants" / "newcdrcolumns"
    layout = parse_layout("csv-newcdrcolumns")
    lines = (folder / "Master.csv").read_text(encoding="utf-8").splitlines()
    rows = [dict(row_headers(parse_line(line), layout)) for line in lines]
    events = {
        (dict(e)["UniqueID"], dict(e)["Sequence"]): dict(e) for e in ami_cdrs(folder / "ami-session.txt")
    }
    assert len(rows) == len(events) == 27
    for row in rows:
        assert row["Sequence"].isdigit()  # written bare, not quoted
        event = events.pop((row["UniqueID"], row["Sequence"]))
        assert all(event[name] == value for name, value in row.items())
    assert not events
