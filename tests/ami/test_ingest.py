"""Cdr event → outbox row, and the buffered group-commit writer, against a real outbox."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest

from connector.ami.ingest import CdrWriter, new_cdr, received_at
from connector.cdr.identity import canonical_identity, fingerprint_of_json, headers_json
from connector.cdr.raw import headers_of_raw
from connector.errors import OutboxError
from connector.outbox.records import Headers, NewCdr
from connector.outbox.store import Store
from tests.ami.conftest import Delta, MakeClient, metric
from tests.doubles.ami_server import FakeAmiServer, synthetic_cdrs, transcript_events
from tests.paths import AMI_FIXTURES

StartWriter = Callable[[CdrWriter], "asyncio.Task[None]"]
TRANSCRIPTS = sorted(p for p in AMI_FIXTURES.glob("*.txt") if not p.name.endswith(".annotated.txt"))


def headers_of(frame: bytes) -> Headers:
    """Parse a frame independently of the connector: split lines, then at the first ': '."""
    lines = frame.decode("utf-8").removesuffix("\r\n\r\n").split("\r\n")
    return tuple((line.split(": ", 1)[0], line.split(": ", 1)[1]) for line in lines)


def cdr_headers(index: int, *, linkedid: bool = True) -> Headers:
    return headers_of(next(synthetic_cdrs(1, index, linkedid=linkedid)))


def stored_headers(path: Path) -> list[Headers]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT raw FROM cdrs ORDER BY id").fetchall()
    return [headers_of_raw(json.loads(raw)) for (raw,) in rows]


class CountingSink:
    """The real store, counting append calls (one call = one transaction)."""

    def __init__(self, store: Store, failures: int = 0, error: str = "database is locked") -> None:
        self.store, self.failures, self.error = store, failures, error
        self.calls: list[int] = []

    async def append_cdrs(self, rows: Sequence[NewCdr]) -> int:
        self.calls.append(len(rows))
        if self.failures:
            self.failures -= 1
            raise OutboxError(f"outbox write failed: {self.error}")
        return await self.store.append_cdrs(rows)


@pytest.fixture
async def writer_task() -> AsyncIterator[StartWriter]:
    tasks: list[tuple[CdrWriter, asyncio.Task[None]]] = []

    def start(writer: CdrWriter) -> asyncio.Task[None]:
        task = asyncio.create_task(writer.run())
        tasks.append((writer, task))
        return task

    yield start
    for writer, task in tasks:
        writer.stop(timeout_s=1)
        await asyncio.wait_for(task, 10)


async def test_new_cdr_keeps_every_header_and_derives_the_keys() -> None:
    events = transcript_events(AMI_FIXTURES / "mappings-dial-answered.txt")
    headers = headers_of(next(f for f in events if f.startswith(b"Event: Cdr\r\n")))
    row = new_cdr(headers, 1795735238.25)
    assert row.headers == headers
    assert row.uniqueid == "1795735234.69" and row.linkedid == "1795735234.66"
    assert row.received_at == "2026-11-26T23:20:38.250000Z"
    assert row.identity == canonical_identity(dict(headers))
    assert row.fingerprint == fingerprint_of_json(headers_json(headers))
    assert row.source == "ami"
    unmapped = new_cdr(cdr_headers(1, linkedid=False), 0.0)
    assert unmapped.linkedid is None


async def test_received_at_is_utc_iso_with_microseconds() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", received_at(1795735238.000001))
    assert received_at(0.5) == "1970-01-01T00:00:00.500000Z"


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: p.stem)
async def test_replaying_a_real_transcript_stores_every_cdr_byte_exact(
    path: Path,
    server: FakeAmiServer,
    store: Store,
    make_client: MakeClient,
    writer_task: StartWriter,
) -> None:
    writer = CdrWriter(store)
    writer_task(writer)
    client, _ = make_client(on_cdr=writer.on_cdr)
    await client.wait_connected()
    events = transcript_events(path)
    expected = [headers_of(f) for f in events if f.startswith(b"Event: Cdr\r\n")]
    await server.replay(events)  # restart-events-on ends with Shutdown: the client reconnects
    await writer.wait_for_rows(len(expected))
    assert stored_headers(store.path) == expected


async def test_duplicated_frames_are_stored_once_and_forked_twins_twice(
    server: FakeAmiServer,
    store: Store,
    make_client: MakeClient,
    writer_task: StartWriter,
) -> None:
    delta = Delta("cdrs_duplicate_total", "cdrs_stored_total", "cdrs_received_total")
    writer = CdrWriter(store)
    writer_task(writer)
    client, _ = make_client(on_cdr=writer.on_cdr)
    await client.wait_connected()
    frame = next(synthetic_cdrs(1, 7))
    twin = frame.replace(b"Sequence: 7\r\n", b"Sequence: 8\r\n")  # ForkCDR: only Sequence differs
    server.send_raw(frame + frame + twin + frame)
    await writer.wait_for_rows(4)
    assert len(stored_headers(store.path)) == 2
    assert (delta["cdrs_received_total"], delta["cdrs_stored_total"]) == (4, 2)
    assert delta["cdrs_duplicate_total"] == 2


async def test_rows_arriving_together_share_one_transaction(store: Store) -> None:
    sink = CountingSink(store)
    writer = CdrWriter(sink)
    for index in range(500):
        writer.on_cdr(cdr_headers(index))
    await writer.flush()
    assert sink.calls == [500]
    assert writer.stored == 500 and writer.buffered == 0


async def test_a_failing_write_keeps_the_rows_and_retries(
    store: Store, caplog: pytest.LogCaptureFixture, writer_task: StartWriter
) -> None:
    delta = Delta("outbox_write_errors_total", "cdrs_stored_total")
    sink = CountingSink(store, failures=3, error="database or disk is full")
    writer = CdrWriter(sink, retry_initial_s=0.001, linger_s=0)
    for index in range(10):
        writer.on_cdr(cdr_headers(index))
    writer_task(writer)
    await writer.wait_for_rows(10)
    assert sink.calls == [10, 10, 10, 10]
    assert delta["outbox_write_errors_total"] == 3 and delta["cdrs_stored_total"] == 10
    assert metric("outbox_writable") == 1
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "disk is full" in errors[0].getMessage()
    assert "outbox writable again" in caplog.text


async def test_past_the_bound_rows_are_dropped_counted_and_logged(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    delta = Delta("cdrs_dropped_total")
    sink = CountingSink(store, failures=1)
    writer = CdrWriter(sink, max_buffer_rows=3)
    for index in range(5):
        writer.on_cdr(cdr_headers(index))
    with pytest.raises(OutboxError):
        await writer.run_once()
    assert metric("outbox_writable") == 0
    assert writer.buffered == 3 and writer.dropped == 2 and delta["cdrs_dropped_total"] == 2
    dropped = [r.getMessage() for r in caplog.records if "CDR DROPPED" in r.getMessage()]
    assert len(dropped) == 2 and "1795700000.3" in dropped[0] and "1795700000.4" in dropped[1]
    await writer.flush()
    assert len(stored_headers(store.path)) == 3


async def test_stop_flushes_what_was_read(store: Store) -> None:
    writer = CdrWriter(store, linger_s=0.05)
    task = asyncio.create_task(writer.run())
    for index in range(100):
        writer.on_cdr(cdr_headers(index))
    writer.stop()
    await asyncio.wait_for(task, 10)
    assert len(stored_headers(store.path)) == 100


async def test_stop_gives_up_when_the_outbox_stays_unwritable(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    delta = Delta("cdrs_dropped_total")
    writer = CdrWriter(CountingSink(store, failures=10**6), retry_initial_s=0.001)
    task = asyncio.create_task(writer.run())
    for index in range(4):
        writer.on_cdr(cdr_headers(index))
    writer.stop(timeout_s=0.05)
    await asyncio.wait_for(task, 10)
    assert delta["cdrs_dropped_total"] == 4
    assert "4 CDRs lost" in caplog.text


async def test_missing_linkedid_gives_one_mappings_warning(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    writer = CdrWriter(store)
    for index in range(3):
        writer.on_cdr(cdr_headers(index, linkedid=False))
    advice = [r for r in caplog.records if "[mappings]" in r.getMessage()]
    assert len(advice) == 1 and "linkedid => LinkedID" in advice[0].getMessage()
    caplog.clear()
    mapped = CdrWriter(store)
    mapped.on_cdr(cdr_headers(1))
    assert "[mappings]" not in caplog.text


class SlowSink:
    """The real store behind a gate the test opens."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.open = asyncio.Event()

    async def append_cdrs(self, rows: Sequence[NewCdr]) -> int:
        await self.open.wait()
        return await self.store.append_cdrs(rows)


async def test_a_writer_behind_pauses_the_reader_until_it_catches_up(store: Store) -> None:
    sink = SlowSink(store)
    writer = CdrWriter(sink, high_water_rows=10, low_water_rows=2, max_batch_rows=5)
    changes: list[bool] = []
    writer.watch(changes.append)
    for index in range(10):
        writer.on_cdr(cdr_headers(index))
    assert writer.saturated and changes == [True]
    flushing = asyncio.create_task(writer.flush())
    sink.open.set()
    await flushing
    assert changes == [True, False]


async def test_a_failing_writer_never_pauses_the_reader(store: Store) -> None:
    writer = CdrWriter(CountingSink(store, failures=1), high_water_rows=3)
    changes: list[bool] = []
    writer.watch(changes.append)
    for index in range(3):
        writer.on_cdr(cdr_headers(index))
    with pytest.raises(OutboxError):
        await writer.run_once()
    for index in range(3, 10):
        writer.on_cdr(cdr_headers(index))
    assert changes == [True, False] and not writer.saturated


async def test_a_stalled_writer_stops_holding_the_reader(store: Store) -> None:
    sink = SlowSink(store)
    writer = CdrWriter(sink, high_water_rows=3, max_pause_s=0.01)
    changes: list[bool] = []
    released = asyncio.Event()
    writer.watch(changes.append)
    writer.watch(lambda saturated: None if saturated else released.set())
    for index in range(3):
        writer.on_cdr(cdr_headers(index))
    await asyncio.wait_for(released.wait(), 10)
    assert changes == [True, False]
    for index in range(3, 6):
        writer.on_cdr(cdr_headers(index))
    assert not writer.saturated  # until a write succeeds again
    sink.open.set()
    await writer.flush()


async def test_a_flood_over_tcp_is_stored_whole_with_a_bounded_buffer(
    server: FakeAmiServer,
    store: Store,
    make_client: MakeClient,
    writer_task: StartWriter,
) -> None:
    writer = CdrWriter(store, high_water_rows=200, low_water_rows=50, max_batch_rows=100)
    peak = [0]

    def on_cdr(headers: Headers) -> None:
        writer.on_cdr(headers)
        peak[0] = max(peak[0], writer.buffered)

    writer_task(writer)
    client, _ = make_client(on_cdr=on_cdr, gate=writer)
    await client.wait_connected()
    await server.send_cdrs(5000, chunk=1000)
    await writer.wait_for_rows(5000)
    assert len(stored_headers(store.path)) == 5000
    # One TCP read (up to 256 KiB, ~350 frames) can land after the pause is requested.
    assert peak[0] < 200 + 1000
