"""The CDR drainer against a real outbox and the real loopback receiver (no mocks)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC
from pathlib import Path

import pytest

from connector.ami.ingest import new_cdr
from connector.api.client import ApiClient
from connector.cdr.filters import FilterRules
from connector.cdr.mapping import MappingOptions
from connector.drain.cdrs import CdrDrainer, DrainSettings
from connector.outbox.records import Headers, Kind, State
from connector.outbox.store import Store
from tests.doubles.receiver import Receiver

KEY = "sk_" + "a" * 32
OPTIONS = MappingOptions(zone=UTC, internal_pattern=re.compile(r"^[0-9]{2,6}$"))
FAST = DrainSettings(
    batch_size=100, force_timeout_s=0.05, idle_poll_s=0.2, retry_base_s=0.05, retry_cap_s=0.2
)


def cdr_headers(n: int, *, dst: str = "200", disposition: str = "ANSWERED", duration: str = "12") -> Headers:
    """A Cdr event's headers as cdr_manager sends them (order kept, trailing empty UserField)."""
    return (
        ("Event", "Cdr"),
        ("Privilege", "cdr,all"),
        ("AccountCode", ""),
        ("Source", "100"),
        ("Destination", dst),
        ("DestinationContext", "phones"),
        ("CallerID", '"Alice" <100>'),
        ("Channel", f"PJSIP/100-{n:08x}"),
        ("DestinationChannel", f"PJSIP/200-{n:08x}"),
        ("LastApplication", "Dial"),
        ("LastData", "PJSIP/200"),
        ("StartTime", "2026-11-27 10:00:00"),
        ("AnswerTime", "2026-11-27 10:00:02" if disposition == "ANSWERED" else ""),
        ("EndTime", "2026-11-27 10:00:14"),
        ("Duration", duration),
        ("BillableSeconds", duration if disposition == "ANSWERED" else "0"),
        ("Disposition", disposition),
        ("AMAFlags", "DOCUMENTATION"),
        ("UniqueID", f"1795735400.{n}"),
        ("UserField", ""),
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(api_key=KEY) as running:
        yield running


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "outbox.db")
    yield opened
    await opened.close()


@pytest.fixture
async def api(receiver: Receiver) -> AsyncIterator[ApiClient]:
    client = ApiClient(base_url=receiver.base_url, api_key=KEY, hostname="pbx1", timeout_s=5)
    yield client
    await client.aclose()


def make_drainer(
    store: Store, api: ApiClient, pace: DrainSettings = FAST, rules: FilterRules | None = None
) -> CdrDrainer:
    return CdrDrainer(store, api, rules or FilterRules(), OPTIONS, pace, asyncio.Event())


async def fill(store: Store, count: int, start: int = 0, **kwargs: str) -> None:
    now = time.time()
    await store.append_cdrs([new_cdr(cdr_headers(n, **kwargs), now) for n in range(start, start + count)])


async def drain_until(drainer: CdrDrainer, done: object, timeout_s: float = 20.0) -> None:
    """Run the drainer's real loop until `done()` is true."""
    task = asyncio.create_task(drainer.run())
    try:
        async with asyncio.timeout(timeout_s):
            while not done():  # type: ignore[operator]
                await asyncio.sleep(0.02)
    finally:
        drainer.stop()
        await task


async def counts(store: Store) -> dict[State, int]:
    return dict((await store.stats()).tables[Kind.CDR].counts)


async def test_delivers_every_row_once_with_the_contract_headers(
    store: Store, api: ApiClient, receiver: Receiver
) -> None:
    await fill(store, 250)
    drainer = make_drainer(store, api)
    while await drainer.run_once():
        pass
    summary = receiver.state.summary()
    assert summary["cdrs"] == 250 and summary["duplicates"] == 0
    assert summary["batches"] == 3  # 100 + 100 + 50
    assert (await counts(store))[State.SENT] == 250
    assert summary["last_headers"]["X-Asterisk-Hostname"] == "pbx1"
    assert "Idempotency-Key" in summary["last_headers"]


async def test_503_for_a_while_loses_nothing(store: Store, api: ApiClient, receiver: Receiver) -> None:
    await fill(store, 120)
    receiver.fail(503, count=4)
    drainer = make_drainer(store, api)

    async def all_sent() -> bool:
        return (await counts(store))[State.SENT] == 120

    task = asyncio.create_task(drainer.run())
    async with asyncio.timeout(20):
        while not await all_sent():
            await asyncio.sleep(0.05)
    drainer.stop()
    await task
    assert receiver.state.summary()["cdrs"] == 120
    assert receiver.state.summary()["answers"].get("cdr 503") == 4
    stored = await store.get_cdrs(list(range(1, 121)))
    assert max(row.attempts for row in stored) >= 1  # the failed attempts were counted


async def test_429_retry_after_is_honoured(store: Store, api: ApiClient, receiver: Receiver) -> None:
    await fill(store, 5)
    receiver.fail(429, count=1, retry_after="2")
    drainer = make_drainer(store, api)
    assert await drainer.run_once() == 5
    assert 1.5 < drainer.gate.paused_for_s <= 2.0
    assert await store.due_cdrs(10) == []  # not due before Retry-After
    rows = await store.get_cdrs([1, 2, 3, 4, 5])
    assert all(row.state is State.PENDING and row.attempts == 1 for row in rows)
    assert all("429" in (row.last_error or "") for row in rows)


async def test_poison_row_alone_fails_and_resend_delivers_it(
    store: Store, api: ApiClient, receiver: Receiver
) -> None:
    await fill(store, 500)
    poison_uniqueid = "1795735400.317"
    receiver.poison("uniqueid", poison_uniqueid, message="bad row")
    drainer = make_drainer(store, api, DrainSettings(batch_size=500, retry_base_s=0.05))
    assert await drainer.run_once() == 500
    state = await counts(store)
    assert state[State.SENT] == 499 and state[State.FAILED] == 1
    (failed,) = (await store.stats()).recent_failures
    assert "bad row" in (failed.last_error or "") and "422" in (failed.last_error or "")
    # The API client's one-line text as it is (it read `HTTP 422: HTTP 422 Unprocessable …` before).
    assert (failed.last_error or "").startswith("HTTP 422 Unprocessable Entity: ")
    assert (failed.last_error or "").count("422") == 1
    assert receiver.state.summary()["cdrs"] == 499

    receiver.clear_poison()
    assert await store.resend(kinds=[Kind.CDR]) == 1
    assert await drainer.run_once() == 1
    assert (await counts(store))[State.SENT] == 500
    assert receiver.state.summary()["cdrs"] == 500


async def test_refused_key_moves_nothing_to_failed_then_resumes(
    store: Store, api: ApiClient, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    await fill(store, 30)
    receiver.refuse_key(True)
    drainer = make_drainer(store, api)
    assert await drainer.run_once() == 30
    state = await counts(store)
    assert state[State.PENDING] == 30 and state[State.FAILED] == 0
    rows = await store.get_cdrs(list(range(1, 31)))
    assert all(row.attempts == 0 for row in rows)  # an auth pause is not an attempt of the row
    assert drainer.gate.paused_for_s > 0
    assert "refused the key (HTTP 401 Unauthorized" in caplog.text  # the client's text, said once
    assert "HTTP 401: " not in caplog.text

    receiver.refuse_key(False)
    await drain_until(drainer, lambda: receiver.state.summary()["cdrs"] == 30)
    assert (await counts(store))[State.SENT] == 30


async def test_filtered_rows_are_kept_with_their_reason_and_never_sent(
    store: Store, api: ApiClient, receiver: Receiver
) -> None:
    await fill(store, 3, dst="s", disposition="NO ANSWER", duration="0")
    await fill(store, 2, start=10, dst="s", disposition="ANSWERED", duration="45")
    await fill(store, 1, start=20, dst="s", disposition="BUSY", duration="3")
    drainer = make_drainer(store, api, rules=FilterRules(exclude_dst=frozenset({"h", "s"})))
    assert await drainer.run_once() == 6
    state = await counts(store)
    assert state[State.FILTERED] == 3 and state[State.SENT] == 3
    assert receiver.state.summary()["cdrs"] == 3


async def test_direct_mode_posts_one_cdr_per_request(
    store: Store, api: ApiClient, receiver: Receiver
) -> None:
    await fill(store, 20)
    drainer = make_drainer(store, api, DrainSettings(direct=True, max_concurrent=4, idle_poll_s=0.2))
    await drain_until(drainer, lambda: receiver.state.summary()["cdrs"] == 20)
    assert receiver.state.summary()["batches"] == 20
    assert (await counts(store))[State.SENT] == 20


async def test_batch_mode_waits_for_force_timeout_on_a_partial_batch(
    store: Store, api: ApiClient, receiver: Receiver
) -> None:
    pace = DrainSettings(batch_size=100, force_timeout_s=0.5, idle_poll_s=5)
    new_rows = asyncio.Event()
    drainer = CdrDrainer(store, api, FilterRules(), OPTIONS, pace, new_rows)
    task = asyncio.create_task(drainer.run())
    await fill(store, 3)
    new_rows.set()
    started = time.monotonic()
    async with asyncio.timeout(5):
        while receiver.state.summary()["cdrs"] < 3:
            await asyncio.sleep(0.01)
    waited = time.monotonic() - started
    drainer.stop()
    await task
    assert receiver.state.summary()["batches"] == 1  # held for the force timeout, sent once
    assert waited >= 0.3


async def test_resent_rows_keep_their_event_id(store: Store, api: ApiClient, receiver: Receiver) -> None:
    await fill(store, 10)
    receiver.fail(500, count=1, after=True)  # the API stored the batch but the answer was lost
    drainer = make_drainer(store, api)
    await drain_until(drainer, lambda: receiver.state.summary()["deliveries"] >= 20)
    summary = receiver.state.summary()
    assert summary["cdrs"] == 10 and summary["duplicates"] == 10  # same event_ids both times
    assert (await counts(store))[State.SENT] == 10
