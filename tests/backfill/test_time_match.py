"""The decision "is this CSV row that AMI CDR with shifted times?", its advice, and the verdict over
the last lines of a Master.csv that `connector check` uses."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from connector.ami.ingest import new_cdr
from connector.backfill.command import add_backfill_parser
from connector.backfill.lines import check_layout
from connector.backfill.time_match import (
    CLI_NAMES,
    Agreement,
    advice,
    compare_recent,
    recent_time_verdict,
    time_shift,
)
from connector.config import load_settings
from connector.outbox.store import Store
from tests.backfill.helpers import rows
from tests.cdr.helpers import ami_cdrs
from tests.paths import VERSION_FIXTURES

NEW_YORK = ZoneInfo("America/New_York")
KOLKATA = ZoneInfo("Asia/Kolkata")
LOCALTZ = VERSION_FIXTURES / "20.20.1" / "variants" / "usegmtime-localtz"

AMI = {
    "UniqueID": "1796306642.8",
    "Channel": "Local/1022@phones-00000004;1",
    "DestinationChannel": "",
    "Source": "1022",
    "Destination": "211",
    "DestinationContext": "lab",
    "StartTime": "2026-12-03 09:04:02",
    "AnswerTime": "2026-12-03 09:04:03",
    "EndTime": "2026-12-03 09:04:05",
    "Duration": "3",
    "BillableSeconds": "2",
    "Disposition": "ANSWERED",
    "LastApplication": "Hangup",
    "LastData": "",
    "AccountCode": "acct-1022",
    "AMAFlags": "DOCUMENTATION",
    "UserField": "scenario=forkcdr",
    "Sequence": "8",
}


def shifted(fields: dict[str, str], delta: timedelta, **changes: str) -> dict[str, str]:
    """A copy of fields with every non-empty time moved by delta, then the changes applied."""
    out = dict(fields)
    for name in ("StartTime", "AnswerTime", "EndTime"):
        if out[name]:
            moved = datetime.fromisoformat(out[name]) + delta
            out[name] = moved.isoformat(sep=" ")
    return out | changes


@pytest.mark.parametrize("hours", [5, -5, 1, -1, 14, -12, 26])
def test_whole_hours_are_a_shift(hours: int) -> None:
    assert time_shift(shifted(AMI, timedelta(hours=hours)), AMI) == timedelta(hours=hours)


def test_a_half_hour_zone_counts_only_as_that_zone_offset() -> None:
    csv = shifted(AMI, timedelta(hours=-5, minutes=-30))  # UTC text vs Kolkata's local (+05:30)
    assert time_shift(csv, AMI) is None  # no zone: not whole hours
    assert time_shift(csv, AMI, KOLKATA) == timedelta(hours=-5, minutes=-30)
    assert time_shift(shifted(AMI, timedelta(minutes=30)), AMI, KOLKATA) is None


@pytest.mark.parametrize(
    "csv",
    [
        AMI,  # the same times: the rows agree, no shift
        shifted(AMI, timedelta(hours=27)),  # more than any zone offset
        shifted(AMI, timedelta(minutes=1)),
        shifted(AMI, timedelta(hours=5), Disposition="NO ANSWER"),  # another CDR of the channel
        shifted(AMI, timedelta(hours=5), Destination="212"),
        shifted(AMI, timedelta(hours=5), Sequence="12"),  # the other ForkCDR twin
        shifted(AMI, timedelta(hours=5), EndTime="2026-12-03 14:04:06"),  # not all by the same
        shifted(AMI, timedelta(hours=5), AnswerTime=""),  # answered on one side only
        shifted(AMI, timedelta(hours=5), StartTime="soon"),
    ],
)
def test_what_is_not_a_shift(csv: dict[str, str]) -> None:
    assert time_shift(csv, AMI, NEW_YORK) is None


def test_an_unanswered_cdr_and_a_missing_sequence() -> None:
    ami = {**AMI, "AnswerTime": "", "BillableSeconds": "0", "Disposition": "NO ANSWER"}
    csv = shifted(ami, timedelta(hours=5))
    del csv["Sequence"]  # cdr_csv's 18 columns carry none
    assert time_shift(csv, ami) == timedelta(hours=5)
    assert time_shift({**csv, "Source": " 1022 "}, ami) == timedelta(hours=5)  # values are trimmed


AT = datetime(2026, 12, 3, 9, 4, 2)


def test_advice_names_the_setting_and_its_value() -> None:
    five = timedelta(hours=5)
    off = advice(five, gmt=False, zone=NEW_YORK, at=AT)
    assert "usegmtime = yes" in off and off.endswith("set CDR_BACKFILL_CSV_GMT=true")
    # The container's zone is UTC while the PBX is 5 h behind it: both settings are wrong.
    both = advice(five, gmt=False, zone=UTC, at=AT)
    assert "set CDR_BACKFILL_CSV_GMT=true" in both and "and set ASTERISK_TZ to the PBX's time zone" in both
    on = advice(-five, gmt=True, zone=NEW_YORK, at=AT)
    assert "usegmtime = no" in on and on.endswith("set CDR_BACKFILL_CSV_GMT=false")
    zone = advice(timedelta(hours=6), gmt=True, zone=ZoneInfo("Europe/Paris"), at=AT)
    assert "Europe/Paris" in zone and "set ASTERISK_TZ to the zone Asterisk runs in" in zone
    assert "add --gmt" in advice(five, gmt=False, zone=NEW_YORK, at=AT, names=CLI_NAMES)


# ---- the verdict over the last lines (for connector check) ---------------------------------------


async def store_ami(outbox: Path, folder: Path = LOCALTZ) -> None:
    store = await Store.open(outbox)
    try:
        await store.append_cdrs(
            [new_cdr(headers, time.time()) for headers in ami_cdrs(folder / "ami-session.txt")]
        )
    finally:
        await store.close()


async def test_verdicts_on_the_usegmtime_capture(outbox_path: Path) -> None:
    await store_ami(outbox_path)
    layout = check_layout("csv")
    csv = LOCALTZ / "Master.csv"

    wrong = compare_recent(csv, layout, outbox_path, gmt=False, zone=NEW_YORK, lines=10)
    assert (wrong.agreement, wrong.compared, wrong.agreeing, wrong.shifted) == (Agreement.SHIFTED, 10, 0, 10)
    assert wrong.hours == 5
    assert wrong.advice.endswith("set CDR_BACKFILL_CSV_GMT=true")

    right = compare_recent(csv, layout, outbox_path, gmt=True, zone=NEW_YORK)
    assert (right.agreement, right.compared, right.agreeing, right.shifted) == (Agreement.AGREE, 27, 27, 0)
    assert (right.shift, right.hours, right.advice) == (None, None, "")


async def test_nothing_comparable(outbox_path: Path, tmp_path: Path) -> None:
    await store_ami(outbox_path, VERSION_FIXTURES / "20.20.1" / "variants" / "newcdrcolumns")
    layout = check_layout("csv")
    verdict = compare_recent(LOCALTZ / "Master.csv", layout, outbox_path, gmt=True, zone=NEW_YORK)
    assert (verdict.agreement, verdict.compared) == (Agreement.NOTHING, 0)
    empty = tmp_path / "Master.csv"
    empty.write_bytes(b"")
    assert compare_recent(empty, layout, outbox_path, gmt=True, zone=NEW_YORK).agreement is Agreement.NOTHING


async def test_a_line_still_being_written_is_left_out(outbox_path: Path, tmp_path: Path) -> None:
    await store_ami(outbox_path)
    partial = tmp_path / "Master.csv"
    data = (LOCALTZ / "Master.csv").read_bytes()
    partial.write_bytes(data + data.splitlines(keepends=True)[0][:40])
    verdict = compare_recent(partial, check_layout("csv"), outbox_path, gmt=True, zone=NEW_YORK, lines=5)
    assert (verdict.agreement, verdict.compared, verdict.agreeing) == (Agreement.AGREE, 5, 5)


async def test_recent_time_verdict_reads_the_settings(
    clean_env: Path, data_dir: Path, outbox_path: Path
) -> None:
    assert recent_time_verdict(load_settings(data_dir=str(data_dir))) is None  # no CDR_BACKFILL_CSV
    await store_ami(outbox_path)
    settings = load_settings(
        data_dir=str(data_dir),
        cdr_backfill_csv=str(LOCALTZ / "Master.csv"),
        asterisk_tz="America/New_York",
        cdr_backfill_csv_gmt="false",
    )
    verdict = recent_time_verdict(settings, lines=3)
    assert verdict is not None and (verdict.agreement, verdict.shifted) == (Agreement.SHIFTED, 3)
    fixed = recent_time_verdict(settings.model_copy(update={"cdr_backfill_csv_gmt": True}))
    assert fixed is not None and fixed.agreement is Agreement.AGREE


# ---- connector backfill --gmt --------------------------------------------------------------------


def backfill(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="connector")
    add_backfill_parser(parser.add_subparsers())
    args = parser.parse_args(["backfill", *argv])
    return int(args.handler(args))


def test_backfill_command_with_and_without_gmt(
    clean_env: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    outbox = data_dir / "outbox.db"
    asyncio.run(store_ami(outbox))
    master = str(LOCALTZ / "Master.csv")

    assert backfill("--file", master, "--tz", "America/New_York") == 0
    out = capsys.readouterr().out
    assert "  time-shifted             27  (not stored" in out and "add --gmt" in out
    assert len(rows(outbox)) == 27

    assert backfill("--file", master, "--gmt", "--tz", "America/New_York") == 0
    out = capsys.readouterr().out
    assert "  already known            27" in out and "time-shifted" not in out
    assert len(rows(outbox)) == 27
