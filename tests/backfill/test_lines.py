"""Pure parts: the batch CSV split, the occurrence window, the date cut, the layout check."""

from __future__ import annotations

from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.backfill.lines import (
    LineParser,
    OccurrenceWindow,
    check_layout,
    cutoff_text,
    split_lines,
)
from connector.cdr.csv_rows import MalformedRow, parse_line
from connector.cdr.identity import canonical_identity
from tests.backfill.helpers import CSV_LAYOUT, csv_line
from tests.cdr.helpers import CUSTOM_LAYOUT
from tests.paths import PAIRED_FIXTURES

# Quotes, commas, spaces, CR and NUL are what can confuse a CSV reader.
LINES = st.lists(st.text(alphabet='"a,b \r\x00é', max_size=12), max_size=12)


def one_by_one(texts: list[str]) -> list[list[str] | type[MalformedRow]]:
    out: list[list[str] | type[MalformedRow]] = []
    for text in texts:
        try:
            out.append(parse_line(text))
        except MalformedRow:
            out.append(MalformedRow)
    return out


@given(LINES)
def test_the_batch_split_equals_parsing_each_line_alone(texts: list[str]) -> None:
    batch = [MalformedRow if isinstance(item, MalformedRow) else item for item in split_lines(texts)]
    assert batch == one_by_one(texts)


def test_an_unterminated_quote_spoils_only_its_own_line() -> None:
    texts = ['"a","b"', '"open,"x', '"c","d"', '"e"']
    split = split_lines(texts)
    assert split[0] == ["a", "b"] and split[2] == ["c", "d"] and split[3] == ["e"]
    assert isinstance(split[1], MalformedRow)


@pytest.mark.parametrize(("name", "spec"), [("Master.csv", "csv"), ("custom-Master.csv", CUSTOM_LAYOUT)])
def test_the_fast_identity_is_the_canonical_identity(name: str, spec: str) -> None:
    layout = check_layout(spec)
    raw = (PAIRED_FIXTURES / name).read_bytes().splitlines()
    parsed = LineParser(layout).parse(raw, 1, OccurrenceWindow(), "2026-01-01T00:00:00.000000Z")
    assert len(parsed.rows) == 69
    for line, row in zip(raw, parsed.rows, strict=True):
        assert row.identity == canonical_identity(dict(zip(layout, parse_line(line.decode()), strict=True)))
        assert LineParser(layout).identity(line) == row.identity


def test_occurrences_count_identical_lines_within_the_window() -> None:
    window = OccurrenceWindow(size=3)
    assert [window.push(x) for x in ("a", "a", None, "b", "a")] == [1, 2, 0, 1, 2]
    # "a" at positions 1 and 2 have left the window of 3 lines: the count starts again.
    assert [window.push(x) for x in ("c", "c", "c", "a")] == [1, 2, 3, 1]


def test_a_copy_is_independent() -> None:
    window = OccurrenceWindow()
    window.push("a")
    copy = window.copy()
    assert copy.push("a") == 2
    assert window.push("b") == 1 and window.push("a") == 2


def test_blank_too_long_and_malformed_lines_take_a_line_number() -> None:
    lines = [csv_line(1).rstrip(b"\n"), b"", None, b"x", csv_line(2).rstrip(b"\n")]
    parsed = LineParser(CSV_LAYOUT).parse(lines, 10, OccurrenceWindow(), "t")
    assert [row.uniqueid for row in parsed.rows] == ["1795800000.1", "1795800000.2"]
    assert [(item.line, item.reason.split(" ")[0]) for item in parsed.malformed] == [(12, "line"), (13, "1")]
    assert parsed.skipped == 1


def test_invalid_utf8_is_replaced_as_the_ami_reader_does() -> None:
    line = csv_line(1).rstrip(b"\n").replace(b"Caller", b"Caller \xe9")
    (row,) = LineParser(CSV_LAYOUT).parse([line], 1, OccurrenceWindow(), "t").rows
    assert dict(row.headers)["CallerID"] == '"Caller \ufffd 1" <1001>'


@pytest.mark.parametrize(
    ("spec", "zone", "expected"),
    [
        ("start", "UTC", None),
        ("end", "UTC", None),
        ("2026-11-01", "Europe/Paris", "2026-11-01 00:00:00"),  # as written in Master.csv
        ("2026-11-01T08:30", "Europe/Paris", "2026-11-01 08:30:00"),
        ("2026-11-01T08:30:00Z", "Europe/Paris", "2026-11-01 09:30:00"),
        ("2026-07-01T12:00:00-04:00", "America/Toronto", "2026-07-01 12:00:00"),
    ],
)
def test_cutoff_text(spec: str, zone: str, expected: str | None) -> None:
    assert cutoff_text(spec, ZoneInfo(zone)) == expected


def test_cutoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="not start or an ISO date"):
        cutoff_text("last tuesday", ZoneInfo("UTC"))


def test_a_layout_without_the_identity_fields_is_refused() -> None:
    assert check_layout("csv") == CSV_LAYOUT
    with pytest.raises(ValueError, match="lacks UniqueID, UserField"):
        check_layout(CUSTOM_LAYOUT.replace("uniqueid,userfield,", ""))
