"""Store behaviour worth naming: dedupe by identity, the claim index, no row claimed twice."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
from pathlib import Path

import pytest

from connector.errors import OutboxError
from connector.outbox.records import Kind, NewCdr, NewRecording, State
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
    encoded = NewCdr(
        headers, "2026-01-01T00:00:00.000000Z", "j", "g", "u", None, raw_json=json.dumps(headers)
    )
    await store.append_cdrs([given, encoded])
    rows = await store.cdrs_by_uniqueid("u")
    assert [row.headers for row in rows] == [headers, headers]


async def _fill_mostly_sent(store: Store, total: int, pending: int) -> None:
    """`total` rows of each kind, all sent but the newest `pending`."""
    await store.append_cdrs([build_cdr(n) for n in range(total)])
    await store.append_recordings([NewRecording(f"/spool/{n}.wav", 2048, 1.0, PAST) for n in range(total)])
    settled_cdrs = await store.claim_cdrs(total - pending, lease_s=60)
    await store.mark_sent(Kind.CDR, [row.id for row in settled_cdrs])
    settled_recordings = await store.claim_recordings(total - pending, lease_s=60)
    await store.mark_sent(Kind.RECORDING, [row.id for row in settled_recordings])
    for kind in Kind:
        await store.release_all(kind)


async def _claim_statement(store: Store, kind: Kind) -> str:
    """The claim statement exactly as SQLite ran it (parameters bound)."""
    seen: list[str] = []
    await store._db.set_trace_callback(seen.append)
    try:
        await (store.claim_cdrs if kind is Kind.CDR else store.claim_recordings)(10, 60)
    finally:
        await store._db.set_trace_callback(None)  # type: ignore[arg-type]
    return next(sql for sql in seen if sql.lstrip().upper().startswith(f"UPDATE {kind.value.upper()}"))


@pytest.mark.parametrize("kind", Kind)
async def test_the_claim_query_uses_the_partial_pending_index(store: Store, kind: Kind) -> None:
    await _fill_mostly_sent(store, total=2000, pending=40)
    statement = await _claim_statement(store, kind)
    with sqlite3.connect(store.path) as db:
        plan = " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {statement}"))
    db.close()
    assert f"ix_{kind.value}_pending" in plan, plan


async def test_the_claim_statement_is_captured(store: Store) -> None:
    # Guards the test above: it must look at the real claim statement, not at nothing.
    await _fill_mostly_sent(store, total=30, pending=5)
    statement = await _claim_statement(store, Kind.CDR)
    assert "state = 'pending'" in statement
    assert "LIMIT 10" in statement


async def test_concurrent_claims_never_share_a_row(outbox_path: Path) -> None:
    stores = [await Store.open(outbox_path) for _ in range(4)]
    try:
        await stores[0].append_cdrs([build_cdr(n) for n in range(1500)])
        rng = random.Random(1)

        async def claimer(store: Store) -> list[int]:
            taken: list[int] = []
            while rows := await store.claim_cdrs(rng.randint(1, 40), lease_s=600):
                taken += [row.id for row in rows]
                await store.mark_sent(Kind.CDR, [row.id for row in rows[::3]])
            return taken

        results = await asyncio.gather(*(claimer(store) for store in stores))
        claimed = [row_id for taken in results for row_id in taken]
        assert len(claimed) == len(set(claimed)) == 1500
        counts = (await stores[0].stats()).tables[Kind.CDR].counts
        assert counts[State.SENT] + counts[State.PENDING] == 1500
    finally:
        for store in stores:
            await store.close()


async def test_claims_are_oldest_first_and_leased(store: Store) -> None:
    await store.append_cdrs([build_cdr(n) for n in range(5)])
    first = await store.claim_cdrs(2, lease_s=600)
    second = await store.claim_cdrs(10, lease_s=600)
    assert [row.id for row in first] == [1, 2]
    assert [row.id for row in second] == [3, 4, 5]
    assert await store.claim_cdrs(10, lease_s=600) == []
    await store.release(Kind.CDR, [2])
    assert [row.id for row in await store.claim_cdrs(10, lease_s=600)] == [2]


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
    (claimed,) = await store.claim_cdrs(1, 60)
    await store.mark_sent(Kind.CDR, [claimed.id])
    assert await store.purge(older_than_s=-60) == 1
    assert await store.append_cdrs([third]) == 1  # a distinct ForkCDR twin: stored, not dropped
    assert await store.append_cdrs([second, third]) == 0  # the same frames again: duplicates


async def test_row_ids_are_never_reused_after_a_purge(store: Store) -> None:
    await store.append_cdrs([build_cdr(n) for n in range(3)])
    claimed = await store.claim_cdrs(3, 60)
    await store.mark_sent(Kind.CDR, [row.id for row in claimed])
    assert await store.purge(older_than_s=-60) == 3
    await store.append_cdrs([build_cdr(10)])
    (row,) = await store.claim_cdrs(1, 60)
    assert row.id == 4
