"""The CDR database follower's position and the same-CDR rule: pure, no server."""

from __future__ import annotations

from datetime import datetime, timedelta

from connector.backfill.db_cursor import MARGIN, DbCursor, first_position, record_identity
from connector.backfill.twins import same_cdr
from connector.cdr.db_rows import DbRecord
from connector.cdr.identity import CANONICAL_FIELDS, canonical_identity

NOW = datetime(2026, 11, 27, 12, 0, 0)


def record(uniqueid: str, end: datetime, **fields: str) -> DbRecord:
    headers = (
        ("UniqueID", uniqueid),
        ("StartTime", (end - timedelta(seconds=30)).strftime("%Y-%m-%d %H:%M:%S")),
    )
    return DbRecord(headers + tuple(fields.items()), end)


def sort(cursor: DbCursor, records: list[DbRecord], clock: float = 0.0):  # type: ignore[no-untyped-def]
    return cursor.sort(records, complete=False, now=NOW, clock=clock, received_at="2026-11-27T11:00:00Z")


def test_the_position_is_the_newest_end_minus_the_margin_and_never_goes_back() -> None:
    cursor = DbCursor(datetime(2026, 11, 27))
    cursor.begin()
    page = sort(cursor, [record("1.1", NOW - timedelta(hours=2)), record("1.2", NOW - timedelta(hours=1))])
    assert len(page.rows) == 2
    low = cursor.next_low()
    assert low == NOW - timedelta(hours=1) - MARGIN
    cursor.commit(page, low)
    cursor.begin()
    assert cursor.next_low() == low  # nothing read: stays


def test_rows_inside_the_margin_read_again_cost_nothing() -> None:
    cursor = DbCursor(datetime(2026, 11, 27))
    rows = [record("1.1", NOW - timedelta(minutes=5)), record("1.2", NOW - timedelta(minutes=3))]
    cursor.begin()
    page = sort(cursor, rows)
    cursor.commit(page, cursor.next_low())
    cursor.begin()
    again = sort(cursor, [*rows, record("1.3", NOW - timedelta(minutes=1))])
    assert (again.handled, [row.uniqueid for row in again.rows]) == (2, ["1.3"])


def test_a_fresh_row_waits_for_the_grace_period_and_holds_the_position() -> None:
    cursor = DbCursor(datetime(2026, 11, 27), grace_s=30.0)
    fresh = record("1.9", NOW - timedelta(seconds=2))
    old = record("1.1", NOW - timedelta(hours=3))
    cursor.begin()
    page = sort(cursor, [old, fresh], clock=100.0)
    assert ([row.uniqueid for row in page.rows], page.waiting) == (["1.1"], 1)
    assert cursor.next_low() == min(fresh.end - MARGIN, fresh.end)
    cursor.commit(page, cursor.next_low())
    cursor.begin()
    assert sort(cursor, [fresh], clock=129.0).waiting == 1
    cursor.begin()
    assert [row.uniqueid for row in sort(cursor, [fresh], clock=130.0).rows] == ["1.9"]


def test_identical_rows_are_numbered_in_each_read() -> None:
    twin = record("1.1", NOW - timedelta(hours=1))
    cursor = DbCursor(datetime(2026, 11, 27))
    cursor.begin()
    page = sort(cursor, [twin, twin])
    assert [row.occurrence for row in page.rows] == [1, 2]
    assert page.rows[0].identity == page.rows[1].identity == record_identity(twin, False)


def test_a_complete_row_has_its_ami_identity() -> None:
    headers = tuple((name, f"v{i}") for i, name in enumerate(CANONICAL_FIELDS))
    full = DbRecord((*headers, ("LinkedID", "x")), NOW)
    assert record_identity(full, True) == canonical_identity(headers)
    assert record_identity(full, False) != canonical_identity(headers)


def test_the_first_position() -> None:
    newest = datetime(2026, 11, 27, 11, 0, 0)
    assert first_position("end", newest, NOW) == newest + timedelta(seconds=1)
    assert first_position("end", None, NOW) == NOW
    assert first_position("start", newest, NOW).year == 1970
    assert first_position("2026-11-01", newest, NOW) == datetime(2026, 11, 1)


AMI = {
    "UniqueID": "1.1",
    "StartTime": "2026-11-27 10:00:00",
    "AnswerTime": "2026-11-27 10:00:05",
    "EndTime": "2026-11-27 10:01:05",
    "Channel": "PJSIP/1001-00000001",
    "LastData": "PJSIP/200&PJSIP/201&PJSIP/202&PJSIP/203,30,tT",
    "Duration": "65",
    "Sequence": "7",
}


def test_same_cdr_on_the_sequence_when_both_have_one() -> None:
    assert same_cdr({"UniqueID": "1.1", "Sequence": "7", "Duration": "1"}, AMI)
    assert not same_cdr({"UniqueID": "1.1", "Sequence": "8", "Duration": "65"}, AMI)


def test_same_cdr_on_every_identity_field_the_row_has() -> None:
    row = {
        "UniqueID": "1.1",
        "StartTime": "2026-11-27 10:00:00",
        "Channel": "PJSIP/1001-00000001",
        "Duration": "65",
    }
    assert same_cdr(row, AMI)
    assert not same_cdr({**row, "Duration": "64"}, AMI)
    assert not same_cdr({**row, "StartTime": "2026-11-27 10:00:01"}, AMI)
    # A column narrower than the value keeps its start; a short prefix is no match.
    assert same_cdr({**row, "LastData": "PJSIP/200&PJSIP/201&PJSIP/2"}, AMI)
    assert not same_cdr({**row, "LastData": "PJSIP/200"}, AMI)
