"""CDR database rows → AMI headers (connector.cdr.db_rows)."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from connector.cdr.db_rows import db_record

PARIS = ZoneInfo("Europe/Paris")


def freepbx_row(**changes: object) -> dict[str, object]:
    row: dict[str, object] = {
        "calldate": datetime(2026, 11, 27, 10, 0, 0),
        "clid": '"Alice" <1001>',
        "src": "1001",
        "dst": "200",
        "dcontext": "from-internal",
        "channel": "PJSIP/1001-00000001",
        "dstchannel": "PJSIP/200-00000002",
        "lastapp": "Dial",
        "lastdata": "PJSIP/200,30",
        "duration": 65,
        "billsec": 60,
        "disposition": "ANSWERED",
        "amaflags": 3,
        "accountcode": "",
        "uniqueid": "1795800000.1",
        "userfield": "",
        "did": "5551234",
        "recordingfile": "out-200-1001-20261127-100000-1795800000.1.wav",
        "cnum": "1001",
        "linkedid": "1795800000.1",
        "peeraccount": "",
        "sequence": 7,
    }
    row.update(changes)
    return row


def test_a_freepbx_row_gets_the_ami_names_and_derived_times() -> None:
    record = db_record(freepbx_row(), UTC)
    assert record is not None
    fields = dict(record.headers)
    assert fields["StartTime"] == "2026-11-27 10:00:00"
    assert fields["EndTime"] == "2026-11-27 10:01:05"
    assert fields["AnswerTime"] == "2026-11-27 10:00:05"
    assert record.derived == {"EndTime", "AnswerTime"}
    assert "EndTime" not in record.own and "AnswerTime" not in record.own
    assert fields["AMAFlags"] == "DOCUMENTATION"
    assert fields["CallerID"] == '"Alice" <1001>'
    assert fields["RecordingFile"].endswith(".wav")
    assert (fields["did"], fields["cnum"], fields["Sequence"]) == ("5551234", "1001", "7")
    assert record.end == datetime(2026, 11, 27, 10, 1, 5)
    names = [name for name, _ in record.headers]
    assert names.index("AccountCode") < names.index("UniqueID") < names.index("did")


def test_an_unanswered_freepbx_call_has_no_answer_time_and_numbers_become_text() -> None:
    record = db_record(
        freepbx_row(billsec=0, disposition="NO ANSWER", amaflags=2, sequence=0, linkedid=""), UTC
    )
    assert record is not None
    fields = dict(record.headers)
    assert fields["AnswerTime"] == "" and fields["AMAFlags"] == "BILLING"
    assert "Sequence" not in fields  # FreePBX's default 0 without a mapped sequence is no Sequence
    assert dict(db_record(freepbx_row(disposition=8), UTC).headers)["Disposition"] == "ANSWERED"  # type: ignore[union-attr]


def test_cdr_pgsql_times_are_read_and_a_zoned_time_becomes_local_text() -> None:
    row = {
        "start": datetime(2026, 11, 27, 9, 0, 0, tzinfo=UTC),
        "answer": None,
        "end": datetime(2026, 11, 27, 9, 0, 30, 400000, tzinfo=UTC),
        "duration": 30,
        "billsec": 0,
        "uniqueid": "1.2",
        "amaflags": "DOCUMENTATION",
    }
    record = db_record(row, PARIS)
    assert record is not None
    fields = dict(record.headers)
    assert (fields["StartTime"], fields["AnswerTime"], fields["EndTime"]) == (
        "2026-11-27 10:00:00",
        "",
        "2026-11-27 10:00:30",
    )
    assert record.derived == frozenset() and record.end == datetime(2026, 11, 27, 10, 0, 30)


def test_a_row_without_a_time_is_none() -> None:
    assert db_record({"uniqueid": "1.2", "calldate": None, "duration": 3}, UTC) is None
