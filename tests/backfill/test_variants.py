"""The cdr.conf `[csv]` variants captured from real Asterisk builds (fixtures/versions/*/variants):
`usegmtime = yes` on a server in America/New_York, and `newcdrcolumns = yes`.

Each test stores some of the session's AMI Cdr events as the listener does, then reads the variant's
Master.csv: exactly the CDRs AMI missed are recovered, and none is stored twice.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from connector.ami.ingest import new_cdr
from connector.backfill.command import import_file
from connector.backfill.guard import TimeGuard
from connector.backfill.lines import LineParser, OccurrenceWindow, check_layout
from connector.backfill.time_match import CLI_NAMES
from connector.cdr.csv_rows import parse_line
from connector.cdr.identity import canonical_identity
from connector.cdr.times import resolve_zone
from connector.outbox.records import Headers
from connector.outbox.store import Store
from tests.backfill.conftest import FollowerFactory
from tests.backfill.helpers import rows
from tests.cdr.helpers import ami_cdrs
from tests.paths import ASTERISK_VERSIONS, VERSION_FIXTURES

PBX_ZONE = "America/New_York"  # the usegmtime-localtz server's zone (fixtures/versions/README.md)
# Not sent over AMI: the first ForkCDR twin's second CDR (frames 0 and 1 are the twins, Sequence
# 8 and 12) and an outage in the middle of the session.
MISSING = frozenset({1, *range(10, 18)})
TIMES = ("StartTime", "AnswerTime", "EndTime")


def variant(version: str, name: str) -> Path:
    return VERSION_FIXTURES / version / "variants" / name


def frames(folder: Path) -> list[Headers]:
    return ami_cdrs(folder / "ami-session.txt")


async def store_ami(store: Store, events: list[Headers], missing: frozenset[int] = MISSING) -> int:
    """Store the events AMI delivered (all but `missing`) as the listener does."""
    delivered = [new_cdr(headers, time.time()) for i, headers in enumerate(events) if i not in missing]
    return await store.append_cdrs(delivered)


def field(headers: Headers, name: str) -> str:
    return dict(headers)[name]


# ---- usegmtime = yes: Master.csv in UTC, AMI in the PBX's local time (5 h earlier) ---------------


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
async def test_usegmtime_file_recovers_exactly_the_missing_cdrs(
    store: Store, outbox_path: Path, make_follower: FollowerFactory, version: str
) -> None:
    folder = variant(version, "usegmtime-localtz")
    events = frames(folder)
    assert len(events) == 27
    # The capture as the README describes it: the same CDR, 5 hours apart.
    first_line = (folder / "Master.csv").read_text().splitlines()[0]
    utc_start = parse_line(first_line)[check_layout("csv").index("StartTime")]
    local_start = datetime.fromisoformat(field(events[0], "StartTime"))
    assert datetime.fromisoformat(utc_start) - local_start == timedelta(hours=5)
    assert await store_ami(store, events) == 18

    follower = make_follower(store, folder / "Master.csv", zone_name=PBX_ZONE, gmt=True)
    assert await follower.run_once() == 27

    assert (follower.known, follower.recovered, follower.shifted, follower.malformed) == (18, 9, 0, 0)
    recovered = rows(outbox_path, "source = 'csv'")
    assert sorted(row["uniqueid"] for row in recovered) == sorted(
        field(events[i], "UniqueID") for i in MISSING
    )
    # Stored as AMI would have sent them: local times (mapped to UTC later like any AMI CDR).
    for i in MISSING:
        (row,) = [
            row for row in await store.cdrs_by_uniqueid(field(events[i], "UniqueID")) if row.source == "csv"
        ]
        assert [row.raw[name] for name in TIMES] == [field(events[i], name) for name in TIMES]
    # The AMI events of the missing CDRs, if they came now, are the recovered rows: nothing is new.
    late = [new_cdr(events[i], time.time()) for i in sorted(MISSING)]
    assert await store.append_cdrs(late) == 0
    assert len(rows(outbox_path)) == 27


async def test_usegmtime_ami_after_csv_stores_each_cdr_once(
    store: Store, outbox_path: Path, make_follower: FollowerFactory
) -> None:
    folder = variant("22.10.1", "usegmtime-localtz")
    await make_follower(store, folder / "Master.csv", zone_name=PBX_ZONE, gmt=True).run_once()
    assert await store_ami(store, frames(folder), frozenset()) == 0
    assert len(rows(outbox_path)) == 27


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
async def test_a_wrong_gmt_setting_is_detected_and_nothing_is_stored_twice(
    store: Store,
    outbox_path: Path,
    make_follower: FollowerFactory,
    caplog: pytest.LogCaptureFixture,
    version: str,
) -> None:
    folder = variant(version, "usegmtime-localtz")
    events = frames(folder)
    await store_ami(store, events)
    # Small batches: the warning must still come once, not once per batch or line.
    follower = make_follower(store, folder / "Master.csv", zone_name=PBX_ZONE, gmt=False, batch_bytes=2048)

    with caplog.at_level(logging.WARNING, logger="connector.backfill.guard"):
        assert await follower.run_once() == 27

    # Every line whose CDR came over AMI is left out; the CDRs AMI missed are still recovered.
    assert (follower.shifted, follower.known, follower.recovered) == (18, 0, 9)
    csv_rows = rows(outbox_path, "source = 'csv'")
    assert sorted(row["uniqueid"] for row in csv_rows) == sorted(
        field(events[i], "UniqueID") for i in MISSING
    )
    assert len(rows(outbox_path)) == 27
    (warning,) = [record for record in caplog.records if record.name == "connector.backfill.guard"]
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert "5 h later than AMI" in message
    assert "usegmtime = yes" in message and "set CDR_BACKFILL_CSV_GMT=true" in message
    assert "ASTERISK_TZ" not in message  # the zone is right: only the one setting to change


async def test_a_wrong_asterisk_tz_is_named(
    store: Store, outbox_path: Path, make_follower: FollowerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    folder = variant("20.20.1", "usegmtime-localtz")
    await store_ami(store, frames(folder))
    follower = make_follower(store, folder / "Master.csv", zone_name="Europe/Paris", gmt=True)

    with caplog.at_level(logging.WARNING, logger="connector.backfill.guard"):
        await follower.run_once()

    assert (follower.shifted, follower.known) == (18, 0)
    assert "set ASTERISK_TZ to the zone Asterisk runs in" in caplog.text
    assert len(rows(outbox_path)) == 27


async def test_gmt_on_a_local_time_file_says_to_turn_it_off(
    store: Store, make_follower: FollowerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    folder = variant("20.20.1", "newcdrcolumns")  # usegmtime = no, server in UTC: AMI = file
    await store_ami(store, frames(folder))
    layout = check_layout("csv-newcdrcolumns")
    follower = make_follower(store, folder / "Master.csv", layout, zone_name="America/New_York", gmt=True)

    with caplog.at_level(logging.WARNING, logger="connector.backfill.guard"):
        await follower.run_once()

    assert (follower.shifted, follower.known) == (18, 0)
    assert "5 h earlier than AMI" in caplog.text and "set CDR_BACKFILL_CSV_GMT=false" in caplog.text


async def test_the_warning_repeats_at_most_every_interval_with_the_counts(
    store: Store, outbox_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = variant("18.26.4", "usegmtime-localtz")
    await store_ami(store, frames(folder))
    parser = LineParser(check_layout("csv"))
    lines = (folder / "Master.csv").read_bytes().splitlines()
    now = [0.0]
    zone = resolve_zone(PBX_ZONE)
    guard = TimeGuard(outbox_path, gmt=False, zone=zone, interval_s=600, clock=lambda: now[0])
    window = OccurrenceWindow()
    try:
        with caplog.at_level(logging.WARNING, logger="connector.backfill.guard"):
            for first in (0, 9, 18):  # at 0 s, 400 s and 800 s
                guard.screen(parser.parse(lines[first : first + 9], first + 1, window, "t"))
                guard.warn("Master.csv")
                now[0] += 400
    finally:
        guard.close()

    assert guard.shifted == 18
    # Lines 1-9: 8 shifted (the second ForkCDR twin never came over AMI); 10-18: 1 (held back at
    # 400 s); 19-27: 9, logged at 800 s with the one held back and the total.
    assert [record.getMessage().split(":", 2)[1] for record in caplog.records] == [
        " 8 line(s) not stored (8 since the start, 8 of them 5 h later than AMI)",
        " 10 line(s) not stored (18 since the start, 18 of them 5 h later than AMI)",
    ]


@pytest.mark.parametrize(("gmt", "expected"), [(True, (18, 9, 0)), (False, (0, 9, 18))])
async def test_connector_backfill_import_of_a_usegmtime_file(
    store: Store, outbox_path: Path, gmt: bool, expected: tuple[int, int, int]
) -> None:
    folder = variant("16.30.1", "usegmtime-localtz")
    await store_ami(store, frames(folder))
    zone = resolve_zone(PBX_ZONE)
    parser = LineParser(check_layout("csv"), gmt_zone=zone if gmt else None)
    guard = TimeGuard(outbox_path, gmt=gmt, zone=zone, names=CLI_NAMES)
    try:
        summary = await import_file(store, folder / "Master.csv", parser, guard=guard, batch_bytes=2048)
    finally:
        guard.close()

    assert (summary.known, summary.recovered, summary.shifted) == expected
    assert len(rows(outbox_path)) == 27
    text = summary.render(None)
    if gmt:
        assert "time-shifted" not in text
    else:
        assert "  time-shifted             18  (not stored" in text
        assert "times do not match AMI: the outbox has these CDRs from AMI 5 h later" in text
        assert "add --gmt" in text


# ---- newcdrcolumns = yes: 21 columns, ForkCDR twins differ by Sequence --------------------------


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
def test_every_newcdrcolumns_line_has_the_identity_of_its_ami_event(version: str) -> None:
    folder = variant(version, "newcdrcolumns")
    parser = LineParser(check_layout("csv-newcdrcolumns"))
    lines = (folder / "Master.csv").read_bytes().splitlines()
    parsed = parser.parse(lines, 1, OccurrenceWindow(), "t")
    assert len(parsed.rows) == 27 and not parsed.malformed
    events = {(field(e, "UniqueID"), field(e, "Sequence")): e for e in frames(folder)}
    for row in parsed.rows:
        event = events.pop((row.uniqueid, field(row.headers, "Sequence")))
        assert row.identity == canonical_identity(event)
        assert row.linkedid == field(event, "LinkedID")
    assert not events
    # The ForkCDR twins: one identity (Sequence is not in it), numbered 1 and 2 in file order.
    twins = [row for row in parsed.rows if row.uniqueid == parsed.rows[0].uniqueid]
    assert [field(row.headers, "Sequence") for row in twins] == ["8", "12"]
    assert len({row.identity for row in twins}) == 1
    assert [row.occurrence for row in twins] == [1, 2]


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
async def test_newcdrcolumns_preset_recovers_the_missing_forkcdr_twin(
    store: Store, outbox_path: Path, make_follower: FollowerFactory, version: str
) -> None:
    folder = variant(version, "newcdrcolumns")
    events = frames(folder)
    await store_ami(store, events)
    follower = make_follower(store, folder / "Master.csv", check_layout("csv-newcdrcolumns"))

    assert await follower.run_once() == 27

    assert (follower.known, follower.recovered, follower.shifted) == (18, 9, 0)
    twin_uniqueid = field(events[0], "UniqueID")
    twins = rows(outbox_path, "uniqueid = ? AND dedupe_key LIKE ?", (twin_uniqueid, field_key(events[0])))
    assert [row["dedupe_key"].rsplit("#", 1)[1] for row in twins] == ["1", "2"]
    assert [row["source"] for row in twins] == ["ami", "csv"]
    # The late AMI events find their rows: 27 CDRs, each once.
    assert await store.append_cdrs([new_cdr(events[i], time.time()) for i in sorted(MISSING)]) == 0
    assert len(rows(outbox_path)) == 27


def field_key(headers: Headers) -> str:
    """A LIKE pattern for every dedupe key of this CDR's identity."""
    return canonical_identity(headers) + "#%"
