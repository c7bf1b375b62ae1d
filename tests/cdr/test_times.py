"""Asterisk's local times → UTC with Z, including DST edges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.cdr import times
from connector.cdr.times import local_zone, resolve_zone, to_utc_iso

NEW_YORK = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    ("local", "zone", "expected"),
    [
        ("2026-11-26 23:28:18", UTC, "2026-11-26T23:28:18Z"),
        ("2026-11-26 23:28:18", ZoneInfo("Etc/UTC"), "2026-11-26T23:28:18Z"),
        ("2026-01-15 10:00:00", PARIS, "2026-01-15T09:00:00Z"),  # CET, +01:00
        ("2026-07-15 10:00:00", PARIS, "2026-07-15T08:00:00Z"),  # CEST, +02:00
        ("2026-07-15 10:00:00", NEW_YORK, "2026-07-15T14:00:00Z"),
        ("2026-12-31 23:30:00", ZoneInfo("Asia/Kolkata"), "2026-12-31T18:00:00Z"),
        ("2027-01-01 00:30:00", NEW_YORK, "2027-01-01T05:30:00Z"),  # crosses a year
        ("2026-07-15 10:00:00.250000", UTC, "2026-07-15T10:00:00.250000Z"),
        (" 2026-07-15 10:00:00 ", UTC, "2026-07-15T10:00:00Z"),
    ],
)
def test_conversion(local: str, zone: ZoneInfo, expected: str) -> None:
    assert to_utc_iso(local, zone) == expected


def test_ambiguous_time_is_the_first_occurrence() -> None:
    # 2026-11-01 01:30 happens twice in New York: 05:30Z (EDT) and 06:30Z (EST).
    assert to_utc_iso("2026-11-01 01:30:00", NEW_YORK) == "2026-11-01T05:30:00Z"
    assert to_utc_iso("2026-10-25 02:30:00", PARIS) == "2026-10-25T00:30:00Z"


def test_non_existent_time_is_shifted_forward_by_the_gap() -> None:
    # 2026-03-08 02:30 does not exist in New York (02:00 → 03:00): read as 03:30 EDT.
    converted = to_utc_iso("2026-03-08 02:30:00", NEW_YORK)
    assert converted == "2026-03-08T07:30:00Z"
    back = datetime.fromisoformat(converted.replace("Z", "+00:00")).astimezone(NEW_YORK)
    assert (back.hour, back.minute) == (3, 30)
    assert to_utc_iso("2026-03-29 02:30:00", PARIS) == "2026-03-29T01:30:00Z"  # 03:30 CEST


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "yesterday",
        "2026-11-26",
        "2026-13-01 00:00:00",
        "2026-02-30 00:00:00",
        "2026-11-26 24:00:00",
        "1795735698",
        "2026-11-26 23:28:18+01:00",
        "٢٠٢٦-11-26 23:28:18",  # non-ASCII digits are not Asterisk's format
    ],
)
def test_not_a_time_is_none(value: str) -> None:
    assert to_utc_iso(value, UTC) is None


def test_out_of_range_after_conversion_is_none() -> None:
    assert to_utc_iso("0001-01-01 00:30:00", ZoneInfo("Asia/Tokyo")) is None
    assert to_utc_iso("9999-12-31 23:00:00", ZoneInfo("America/Los_Angeles")) is None


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)))
def test_any_wall_time_converts_within_a_day(wall: datetime) -> None:
    text = wall.replace(microsecond=0).strftime("%Y-%m-%d %H:%M:%S")
    for zone in (NEW_YORK, PARIS, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("Pacific/Apia")):
        converted = to_utc_iso(text, zone)
        assert converted is not None and converted.endswith("Z")
        instant = datetime.fromisoformat(converted.removesuffix("Z"))
        assert abs(instant - wall.replace(microsecond=0)) <= timedelta(hours=15)


def test_resolve_zone_by_name() -> None:
    assert resolve_zone("Europe/Paris") == PARIS
    assert resolve_zone(" America/New_York ") == NEW_YORK


def test_empty_zone_is_local_from_tz_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    assert resolve_zone("") == NEW_YORK
    monkeypatch.setenv("TZ", ":Europe/Paris")
    assert local_zone() == PARIS


def test_local_zone_from_localtime_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    paris_file = Path("/usr/share/zoneinfo/Europe/Paris")
    if not paris_file.exists():
        pytest.skip("no system zoneinfo files")
    link = tmp_path / "localtime"
    link.write_bytes(paris_file.read_bytes())
    monkeypatch.setattr(times, "_LOCALTIME", link)
    monkeypatch.setenv("TZ", "No/Such_Zone")  # unusable: fall back to /etc/localtime
    zone = local_zone()
    assert to_utc_iso("2026-07-15 10:00:00", zone) == "2026-07-15T08:00:00Z"
    monkeypatch.setenv("TZ", str(paris_file))  # an absolute path, as libc accepts
    assert to_utc_iso("2026-01-15 10:00:00", local_zone()) == "2026-01-15T09:00:00Z"


def test_local_zone_without_any_information_is_utc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TZ", raising=False)
    monkeypatch.setattr(times, "_LOCALTIME", tmp_path / "missing")
    assert local_zone() is UTC


# ---- usegmtime: a Master.csv's UTC times → the PBX's local text ----------------------------------


@pytest.mark.parametrize(
    ("utc", "zone", "expected"),
    [
        ("2026-12-03 14:04:02", NEW_YORK, "2026-12-03 09:04:02"),  # EST, the usegmtime-localtz capture
        ("2026-07-15 14:00:00", NEW_YORK, "2026-07-15 10:00:00"),  # EDT
        ("2026-01-15 09:00:00", PARIS, "2026-01-15 10:00:00"),
        ("2026-12-31 18:00:00", ZoneInfo("Asia/Kolkata"), "2026-12-31 23:30:00"),
        ("2027-01-01 03:00:00", NEW_YORK, "2026-12-31 22:00:00"),  # back across a year
        ("2026-11-26 23:28:18", UTC, "2026-11-26 23:28:18"),
        ("", NEW_YORK, ""),  # an unanswered CDR's AnswerTime stays empty
    ],
)
def test_utc_to_local_text(utc: str, zone: ZoneInfo, expected: str) -> None:
    assert times.utc_to_local_text(utc, zone) == expected


def test_utc_to_local_text_at_dst_edges() -> None:
    # DST ends: 05:30Z (EDT) and 06:30Z (EST) are both 01:30 local, as Asterisk writes them in AMI.
    assert times.utc_to_local_text("2026-11-01 05:30:00", NEW_YORK) == "2026-11-01 01:30:00"
    assert times.utc_to_local_text("2026-11-01 06:30:00", NEW_YORK) == "2026-11-01 01:30:00"
    # DST starts: 06:59Z is 01:59 EST, 07:00Z is 03:00 EDT (02:xx never appears).
    assert times.utc_to_local_text("2026-03-08 06:59:59", NEW_YORK) == "2026-03-08 01:59:59"
    assert times.utc_to_local_text("2026-03-08 07:00:00", NEW_YORK) == "2026-03-08 03:00:00"


@pytest.mark.parametrize("value", ["yesterday", "2026-11-26", "2026-11-26T23:28:18", "2026-02-30 10:00:00"])
def test_utc_to_local_text_refuses_what_is_not_a_csv_time(value: str) -> None:
    assert times.utc_to_local_text(value, NEW_YORK) is None


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1)),
    st.sampled_from([NEW_YORK, PARIS, ZoneInfo("Asia/Kolkata"), ZoneInfo("Australia/Lord_Howe"), UTC]),
)
def test_utc_to_local_text_is_the_local_wall_clock_of_that_instant(moment: datetime, zone: ZoneInfo) -> None:
    utc = moment.replace(microsecond=0)
    local = times.utc_to_local_text(utc.isoformat(sep=" "), zone)
    assert local is not None
    # Read back in the zone, the local text is the same instant (one of the two in a repeated hour).
    naive = datetime.fromisoformat(local)
    instants = {naive.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1)}
    assert utc.replace(tzinfo=UTC) in instants
    assert abs(naive - utc) <= timedelta(hours=14)
