"""Store behaviour worth naming: dedupe by identity, the due reads' index, no row taken twice."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

import pytest

from connector.cdr.raw import raw_json
from connector.errors import OutboxError
from connector.outbox.records import CdrRow, Kind, NewCdr, NewRecording, RecordingRow, State
from connector.outbox.store import Store
from tests.conftest import build_cdr

PAST = "2026-01-01T00:00:00.000000Z"


def _twin(identity: str, fingerprint: str | None, occurrence: int | None = None) -> NewCdr:
    """A CDR with the given identity, as an AMI frame (fingerprint) or a CSV line (occurrence)."""
    return NewCdr(
        headers=(("UniqueID", "1700000000.1"),),
        received_at="2026-01-01T00:00:00.000000Z",
        identity=identity,
        fingerprint=fingerprint,
        uniqueid="1700000000.1",
        linkedid=None,
        source="ami" if fingerprint else "csv",
        occurrence=occurrence,
    )


async def _keys(store: Store) -> list[str]:
    return [row.dedupe_key for row in await store.cdrs_by_uniqueid("1700000000.1")]


async def test_the_same_frame_twice_is_stored_once(store: Store) -> None:
    assert await store.append_cdrs([_twin("i", "f1"), _twin("i", "f1")]) == 1
    assert await store.append_cdrs([_twin("i", "f1")]) == 0
    assert await _keys(store) == ["i#1"]


async def test_forked_cdrs_with_equal_fields_are_numbered(store: Store) -> None:
    assert await store.append_cdrs([_twin("i", "fork-a"), _twin("i", "fork-b")]) == 2
    assert await store.append_cdrs([_twin("i", "fork-c"), _twin("i", "fork-b")]) == 1
    assert await _keys(store) == ["i#1", "i#2", "i#3"]


async def test_csv_lines_seen_over_ami_are_not_stored_again(store: Store) -> None:
    await store.append_cdrs([_twin("i", "fork-a"), _twin("i", "fork-b")])
    assert await store.append_cdrs([_twin("i", None, 1), _twin("i", None, 2)]) == 0
    assert await store.append_cdrs([_twin("i", None, 3)]) == 1  # missed over AMI: recovered
    assert await _keys(store) == ["i#1", "i#2", "i#3"]


async def test_ami_frames_after_their_csv_lines_add_nothing(store: Store) -> None:
    assert await store.append_cdrs([_twin("i", None, 1), _twin("i", None, 2)]) == 2
    assert await store.append_cdrs([_twin("i", "fork-b"), _twin("i", "fork-a"), _twin("i", "fork-b")]) == 0
    assert await store.append_cdrs([_twin("i", "fork-c")]) == 1
    assert await _keys(store) == ["i#1", "i#2", "i#3"]


async def test_headers_come_back_exactly_as_received(store: Store) -> None:
    headers = (
        ("Event", "Cdr"),
        ("UserField", " spaced  "),
        ("CallerID", '"Zoë" <1001>'),
        ("UserField", "twice"),
    )
    given = NewCdr(headers, "2026-01-01T00:00:00.000000Z", "i", "f", "u", None)
    encoded = NewCdr(headers, "2026-01-01T00:00:00.000000Z", "j", "g", "u", None, raw_json=raw_json(headers))
    await store.append_cdrs([given, encoded])
    rows = await store.cdrs_by_uniqueid("u")
    assert [row.headers for row in rows] == [headers, headers]
    # The repeated header is kept where it came, under its own name with its number.
    expected = [*headers[:3], ("UserField#2", "twice")]
    assert [list(row.raw.items()) for row in rows] == [expected] * 2


async def _fill_mostly_sent(store: Store, total: int, pending: int) -> None:
    """`total` rows of each kind, all sent but the newest `pending`."""
    await store.append_cdrs([build_cdr(n) for n in range(total)])
    await store.append_recordings([NewRecording(f"/spool/{n}.wav", 2048, 1.0, PAST) for n in range(total)])
    settled_cdrs = await store.due_cdrs(total - pending)
    await store.mark_sent(Kind.CDR, [row.id for row in settled_cdrs])
    settled_recordings = await store.due_recordings(total - pending)
    await store.mark_sent(Kind.RECORDING, [row.id for row in settled_recordings])


async def _due_statements(store: Store, kind: Kind) -> list[str]:
    """The due reads exactly as SQLite ran them (parameters bound): the rows, then the summary."""
    seen: list[str] = []
    await store._db.set_trace_callback(seen.append)
    try:
        await (store.due_cdrs if kind is Kind.CDR else store.due_recordings)(10, [1, 2])
        await store.due_summary(kind, 10, [1, 2])
    finally:
        await store._db.set_trace_callback(None)  # type: ignore[arg-type]
    return [sql for sql in seen if "next_attempt_at" in sql]


@pytest.mark.parametrize("kind", Kind)
async def test_the_due_reads_use_the_partial_pending_index(store: Store, kind: Kind) -> None:
    await _fill_mostly_sent(store, total=2000, pending=40)
    statements = await _due_statements(store, kind)
    with sqlite3.connect(store.path) as db:
        plans = [
            " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}"))
            for statement in statements
        ]
    db.close()
    assert len(plans) == 2
    for plan in plans:
        assert f"ix_{kind.value}_pending" in plan, plan


async def test_the_due_statements_are_captured(store: Store) -> None:
    # Guards the test above: it must look at the real due reads, not at nothing.
    await _fill_mostly_sent(store, total=30, pending=5)
    rows, summary = await _due_statements(store, Kind.CDR)
    for statement in (rows, summary):
        assert statement.lstrip().upper().startswith("SELECT")
        assert "state = 'pending'" in statement
        assert "LIMIT 10" in statement
        assert "json_each('[1, 2]')" in statement
    assert "count(*)" in summary


async def test_rows_in_flight_are_never_taken_twice(store: Store) -> None:
    # What both drainers do: one taker reads due rows without those in flight, deliveries settle
    # them concurrently and only then leave the in-flight set.
    await store.append_cdrs([build_cdr(n) for n in range(1500)])
    rng = random.Random(1)
    in_flight: set[int] = set()
    taken: list[int] = []

    async def deliver(ids: list[int]) -> None:
        await asyncio.sleep(rng.uniform(0, 0.01))
        await store.mark_sent(Kind.CDR, ids)
        in_flight.difference_update(ids)

    async with asyncio.TaskGroup() as deliveries:
        while True:
            rows = await store.due_cdrs(rng.randint(1, 40), in_flight)
            if not rows and not in_flight:
                break
            ids = [row.id for row in rows]
            assert not in_flight & set(ids)
            in_flight.update(ids)
            taken += ids
            deliveries.create_task(deliver(ids))
            await asyncio.sleep(0)
    assert len(taken) == len(set(taken)) == 1500
    counts = (await store.stats()).tables[Kind.CDR].counts
    assert counts[State.SENT] == 1500


@pytest.mark.parametrize("kind", Kind)
async def test_due_reads_are_oldest_first_and_skip_rows_in_flight(store: Store, kind: Kind) -> None:
    await store.append_cdrs([build_cdr(n) for n in range(5)])
    await store.append_recordings([NewRecording(f"/spool/{n}.wav", 2048, 1.0, PAST) for n in range(5)])
    due = store.due_cdrs if kind is Kind.CDR else store.due_recordings
    first = await due(2)
    assert [row.id for row in first] == [1, 2]
    assert [row.id for row in await due(10, [1, 2])] == [3, 4, 5]
    assert [row.id for row in await due(2, [1, 3])] == [2, 4]
    assert await due(10, [1, 2, 3, 4, 5]) == []
    assert await store.due_summary(kind, 10, [1, 2, 3]) == (2, PAST)  # build_cdr's received_at
    assert [row.id for row in await due(10)] == [1, 2, 3, 4, 5]  # reading wrote nothing


@pytest.mark.parametrize("kind", Kind)
async def test_a_rescheduled_row_stays_put_off_across_a_restart(outbox_path: Path, kind: Kind) -> None:
    store = await Store.open(outbox_path)
    try:
        await store.append_cdrs([build_cdr(n) for n in range(3)])
        await store.append_recordings([NewRecording(f"/spool/{n}.wav", 2048, 1.0, PAST) for n in range(3)])
        await store.reschedule(kind, [1], 3600.0, "HTTP 503")
        await store.defer(kind, [2], 3600.0)
        before = {row.id: row.next_attempt_at for row in await _rows(store, kind)}
    finally:
        await store.close()
    store = await Store.open(outbox_path)  # the next start
    try:
        due = store.due_cdrs if kind is Kind.CDR else store.due_recordings
        assert [row.id for row in await due(10)] == [3]
        assert {row.id: row.next_attempt_at for row in await _rows(store, kind)} == before
    finally:
        await store.close()


async def _rows(store: Store, kind: Kind) -> list[CdrRow] | list[RecordingRow]:
    if kind is Kind.CDR:
        return await store.get_cdrs([1, 2, 3])
    return await store.get_recordings([1, 2, 3])


async def test_a_write_failure_is_an_outbox_error(store: Store) -> None:
    with sqlite3.connect(store.path) as db:
        db.execute(
            "CREATE TRIGGER no_more BEFORE INSERT ON cdr BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
    db.close()
    with pytest.raises(OutboxError, match="disk says no"):
        await store.append_cdrs([build_cdr(1)])
    assert (await store.stats()).tables[Kind.CDR].counts[State.PENDING] == 0
    await store.append_recordings([])  # the connection is usable after the failed transaction


async def test_a_fork_arriving_after_a_purge_is_not_mistaken_for_a_stored_one(store: Store) -> None:
    first, second, third = (build_cdr(7, fingerprint=f"frame-{name}") for name in "ABC")
    assert await store.append_cdrs([first, second]) == 2
    (taken,) = await store.due_cdrs(1)
    await store.mark_sent(Kind.CDR, [taken.id])
    assert await store.purge(older_than_s=-60) == 1
    assert await store.append_cdrs([third]) == 1  # a distinct ForkCDR twin: stored, not dropped
    assert await store.append_cdrs([second, third]) == 0  # the same frames again: duplicates


async def test_row_ids_are_never_reused_after_a_purge(store: Store) -> None:
    await store.append_cdrs([build_cdr(n) for n in range(3)])
    taken = await store.due_cdrs(3)
    await store.mark_sent(Kind.CDR, [row.id for row in taken])
    assert await store.purge(older_than_s=-60) == 3
    await store.append_cdrs([build_cdr(10)])
    (row,) = await store.due_cdrs(1)
    assert row.id == 4
