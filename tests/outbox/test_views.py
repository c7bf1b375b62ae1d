"""The cdrs and recordings views over real fixture frames, and README's sqlite3 examples as printed."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.ami.ingest import new_cdr
from connector.cdr.identity import first_wins
from connector.outbox.records import Kind, NewRecording
from connector.outbox.store import Store
from tests.cdr.helpers import all_fixture_cdrs
from tests.paths import REPO

CDRS_COLUMNS = [
    "id", "state", "received_at", "sent_at", "uniqueid", "linkedid", "sequence", "src", "dst", "dcontext",
    "clid", "channel", "dstchannel", "disposition", "duration", "billsec", "start_time", "answer_time",
    "end_time", "accountcode", "userfield", "attempts", "next_attempt_at", "last_error", "filter_reason",
    "source", "raw",
]  # fmt: skip
# view column -> the AMI header it shows
HEADER_OF = {
    "src": "Source", "dst": "Destination", "dcontext": "DestinationContext", "clid": "CallerID",
    "channel": "Channel", "dstchannel": "DestinationChannel", "disposition": "Disposition",
    "accountcode": "AccountCode", "userfield": "UserField", "uniqueid": "UniqueID",
}  # fmt: skip
INT_OF = {"duration": "Duration", "billsec": "BillableSeconds", "sequence": "Sequence"}
TIME_OF = {"start_time": "StartTime", "answer_time": "AnswerTime", "end_time": "EndTime"}


@pytest.fixture
async def filled(store: Store) -> Store:
    """Every fixture Cdr frame, some filtered and failed, and a recording."""
    frames = all_fixture_cdrs()
    await store.append_cdrs([new_cdr(headers, 1795735000.0 + i) for i, headers in enumerate(frames)])
    ids = [row.id for row in await store.due_cdrs(1000)]
    await store.mark_sent(Kind.CDR, ids[:10])
    await store.mark_filtered(Kind.CDR, {i: "dst_excluded" for i in ids[10:13]})
    await store.mark_failed(Kind.CDR, {ids[13]: "HTTP 422: field 'dst' is invalid"})
    await store.append_recordings(
        [
            NewRecording(
                "/spool/lab-1795735443.50.wav", 63404, 1795735447.5, "2026-11-27T00:10:47Z", "1795735443.50"
            )
        ]
    )
    return store


def _query(path: Path, sql: str) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(sql).fetchall()
    db.close()
    return rows


async def test_cdrs_shows_every_stored_cdr_with_its_fields(filled: Store) -> None:
    rows = _query(filled.path, "SELECT * FROM cdrs ORDER BY id")
    assert list(rows[0].keys()) == CDRS_COLUMNS
    frames = all_fixture_cdrs()
    assert len(rows) == len(frames)  # the fixtures hold no duplicate frame
    for row, fields in zip(rows, map(first_wins, frames), strict=True):  # stored in arrival order
        for column, header in HEADER_OF.items():
            assert row[column] == fields[header], column
        for column, header in INT_OF.items():
            assert row[column] == (int(fields[header]) if fields.get(header) else None), column
        for column, header in TIME_OF.items():
            assert row[column] == (fields[header] or None), column
    states = {row["state"] for row in rows}
    assert states == {"pending", "sent", "filtered", "failed"}
    failed = [row for row in rows if row["state"] == "failed"]
    assert [row["last_error"] for row in failed] == ["HTTP 422: field 'dst' is invalid"]
    assert {row["filter_reason"] for row in rows if row["state"] == "filtered"} == {"dst_excluded"}


async def test_raw_reads_any_header_by_name(filled: Store) -> None:
    rows = _query(
        filled.path, "SELECT raw ->> '$.LinkedID' AS linked, linkedid FROM cdrs WHERE linkedid IS NOT NULL"
    )
    assert rows and all(row["linked"] == row["linkedid"] for row in rows)


async def test_recordings_view(filled: Store) -> None:
    (row,) = _query(filled.path, "SELECT * FROM recordings")
    assert (row["path"], row["size"], row["uniqueid"], row["state"]) == (
        "/spool/lab-1795735443.50.wav",
        63404,
        "1795735443.50",
        "pending",
    )
    assert row["modified_at"] == datetime.fromtimestamp(1795735447.5, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _readme_sql() -> Iterator[str]:
    """Every statement of README's sqlite3 sections, exactly as printed."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("### Inspecting the outbox with sqlite3")
    section = text[start : text.index("### Resending failed rows", start)]
    for block in re.findall(r"```sql\n(.*?)```", section, re.S):
        for statement in block.split(";"):
            if statement.strip() and not all(
                line.strip().startswith("--") for line in statement.strip().splitlines()
            ):
                yield statement
    yield from re.findall(r"^sqlite3 -readonly /data/outbox.db '([^']+)'", section, re.M)


def test_readme_has_the_examples() -> None:
    assert len(list(_readme_sql())) >= 8


async def test_readme_examples_run_as_printed(filled: Store) -> None:
    for statement in _readme_sql():
        _query(filled.path, statement)  # raises on any error
    call = _query(
        filled.path,
        next(s for s in _readme_sql() if "WHERE linkedid = '1795735234.66'" in s),
    )
    assert [row["sequence"] for row in call] == sorted(row["sequence"] for row in call)
    assert len(call) == 3
