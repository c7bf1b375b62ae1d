"""Retention: purge by age, the size bound, space given back; pending and failed rows never go.

Settle times come from a simulated clock (connector.timeutil.set_clock): days pass without waiting.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, pool

from connector import metrics
from connector.config import load_settings
from connector.errors import ConfigError
from connector.outbox import migrate
from connector.outbox.records import Kind, NewRecording, State
from connector.outbox.retention import (
    RetentionPass,
    RetentionSettings,
    oldest_kind,
    over_bound,
    vacuum_step,
)
from connector.outbox.space import MIB, SpaceFigures
from connector.outbox.statements import SETTLED_CHUNK_ROWS, delete_settled_sql, oldest_settled_sql
from connector.outbox.store import Store
from connector.timeutil import set_clock, to_iso
from tests.conftest import build_cdr

DAY_S = 86400.0
PAST = "2026-01-01T00:00:00.000000Z"
START = datetime(2026, 3, 1, tzinfo=UTC)


class Clock:
    """A settable `now` for the store's timestamps."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def at_day(self, day: float) -> str:
        self.now = START + timedelta(days=day)
        return to_iso(self.now)


@pytest.fixture
def clock() -> Iterator[Clock]:
    simulated = Clock()
    set_clock(simulated)
    try:
        yield simulated
    finally:
        set_clock(None)


async def add_cdrs(store: Store, first: int, count: int, received_at: str) -> list[int]:
    """Append `count` distinct CDRs; return their ids."""
    await store.append_cdrs([build_cdr(n, received_at=received_at) for n in range(first, first + count)])
    rows = await store.due_cdrs(count + 10_000)
    return [row.id for row in rows][-count:]


def states(path: Path, table: str = "cdr") -> dict[int, str]:
    with sqlite3.connect(path) as db:
        found = dict(db.execute(f"SELECT id, state FROM {table}").fetchall())
    db.close()
    return found


def raw_ids(path: Path) -> set[int]:
    with sqlite3.connect(path) as db:
        found = {row[0] for row in db.execute("SELECT id FROM cdr_raw")}
    db.close()
    return found


def purged_metric(kind: Kind) -> float:
    return metrics.REGISTRY.get_sample_value("outbox_purged_rows_total", {"table": kind.value}) or 0.0


def gauge(name: str) -> float:
    value = metrics.REGISTRY.get_sample_value(name)
    assert value is not None, f"{name} not exported"
    return value


# -- pure decisions ------------------------------------------------------------------------------


def test_the_oldest_settled_row_picks_the_table() -> None:
    assert oldest_kind({Kind.CDR: None, Kind.RECORDING: None}) is None
    assert oldest_kind({Kind.CDR: "2026-01-02", Kind.RECORDING: None}) is Kind.CDR
    assert oldest_kind({Kind.CDR: "2026-01-02", Kind.RECORDING: "2026-01-01"}) is Kind.RECORDING


def test_the_bound_counts_pages_in_use_and_zero_means_none() -> None:
    space = SpaceFigures(page_size=4096, page_count=300, freelist_count=100, wal_bytes=10**9)
    assert space.in_use_bytes == 200 * 4096 and space.free_bytes == 100 * 4096
    assert not over_bound(space, 0)
    assert not over_bound(space, 200 * 4096)  # a WAL left large by a burst is not what rows use
    assert over_bound(space, 200 * 4096 - 1)
    assert vacuum_step(space, 128) == 100 and vacuum_step(space, 64) == 64


# -- the statements ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(Kind))
async def test_the_chunked_delete_walks_the_settled_index(store: Store, kind: Kind) -> None:
    with sqlite3.connect(store.path) as db:
        for with_cutoff in (True, False):
            plan = db.execute(
                f"EXPLAIN QUERY PLAN {delete_settled_sql(kind, with_cutoff)}", {"cutoff": "x", "limit": 5}
            ).fetchall()
            details = " | ".join(row[3] for row in plan)
            assert f"USING INDEX ix_{kind.value}_settled" in details, details
            assert ("(updated_at<?)" in details) is with_cutoff, details
        (oldest,) = db.execute(f"EXPLAIN QUERY PLAN {oldest_settled_sql(kind)}").fetchall()
        assert f"USING INDEX ix_{kind.value}_settled" in oldest[3]
    db.close()


# -- purge by age --------------------------------------------------------------------------------


async def test_a_pass_purges_rows_settled_past_the_retention_never_pending_or_failed(
    store: Store, clock: Clock
) -> None:
    day0 = clock.at_day(0)
    ids = await add_cdrs(store, 0, 300, day0)
    sent, filtered, failed = ids[:100], ids[100:150], ids[150:170]
    pending = ids[170:]
    await store.mark_sent(Kind.CDR, sent)
    await store.mark_filtered(Kind.CDR, dict.fromkeys(filtered, "exclude_dst"))
    await store.mark_failed(Kind.CDR, dict.fromkeys(failed, "HTTP 422"))
    await store.append_recordings([NewRecording(f"/spool/{n}.wav", 2048, 1.0, day0) for n in range(2)])
    await store.mark_recording_sent(1, "0" * 64)
    clock.at_day(3)
    recent = await add_cdrs(store, 1000, 50, clock.at_day(3))
    await store.mark_sent(Kind.CDR, recent)
    before = purged_metric(Kind.CDR)

    clock.at_day(8)  # day-0 rows are 8 days old, day-3 rows 5
    retention = RetentionPass(store, RetentionSettings(retention_s=7 * DAY_S), chunk_rows=40)
    report = await retention.run_once()

    assert report.by_age == {Kind.CDR: 150, Kind.RECORDING: 1}
    assert sum(report.for_bound.values()) == 0 and not report.over_bound
    left = states(store.path)
    assert sorted(left) == sorted(failed + pending + recent)
    assert {left[i] for i in failed} == {State.FAILED.value}
    assert {left[i] for i in pending} == {State.PENDING.value}
    assert raw_ids(store.path) == set(left)  # each deleted row took its raw headers along
    assert states(store.path, "recording") == {2: State.PENDING.value}
    assert purged_metric(Kind.CDR) - before == 150

    # Pending and failed rows stay however old they grow; a later pass finds nothing more.
    clock.at_day(400)
    again = await retention.run_once()
    assert sorted(states(store.path)) == sorted(failed + pending)
    assert again.by_age[Kind.CDR] == 50


async def test_connector_purge_deletes_every_chunk(store: Store) -> None:
    count = SETTLED_CHUNK_ROWS * 2 + 17
    ids = await add_cdrs(store, 0, count, PAST)
    await store.mark_sent(Kind.CDR, ids)
    assert await store.purge(older_than_s=-60) == count
    assert states(store.path) == {}


# -- the size bound ------------------------------------------------------------------------------


async def fill_sent_days(store: Store, clock: Clock, days: int, per_day: int) -> dict[int, list[int]]:
    """Store and deliver `per_day` CDRs on each of `days` days; return the ids of each day."""
    sent: dict[int, list[int]] = {}
    for day in range(days):
        ids = await add_cdrs(store, day * per_day, per_day, clock.at_day(day))
        await store.mark_sent(Kind.CDR, ids)
        sent[day] = ids
    return sent


async def test_past_the_bound_the_oldest_settled_rows_go_first_whatever_their_age(
    store: Store, clock: Clock
) -> None:
    sent = await fill_sent_days(store, clock, days=6, per_day=400)
    pending = await add_cdrs(store, 90_000, 300, clock.at_day(6))
    space = await store.space()
    bound = space.in_use_bytes // 2
    retention = RetentionPass(store, RetentionSettings(retention_s=365 * DAY_S, max_bytes=bound))

    report = await retention.run_once()

    assert sum(report.by_age.values()) == 0  # nothing is older than a year
    assert report.for_bound[Kind.CDR] > 0 and not report.over_bound
    after = await store.space()
    assert after.in_use_bytes <= bound
    left = states(store.path)
    assert all(i in left for i in pending)
    gone_days = [day for day, ids in sent.items() if not any(i in left for i in ids)]
    kept_days = [day for day, ids in sent.items() if all(i in left for i in ids)]
    assert gone_days and kept_days
    assert max(gone_days) < min(kept_days)  # oldest settled first
    assert gauge("outbox_max_bytes") == bound and gauge("outbox_over_bound") == 0


async def test_pending_and_failed_rows_past_the_bound_are_kept_reported_and_storing_goes_on(
    store: Store, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    # The pending rows alone (~4 MB) are well over the bound.
    await fill_sent_days(store, clock, days=1, per_day=200)
    ids = [i for first in range(0, 8000, 500) for i in await add_cdrs(store, first + 10_000, 500, PAST)]
    failed = ids[:100]
    await store.mark_failed(Kind.CDR, dict.fromkeys(failed, "HTTP 422"))
    bound = 3 * MIB
    retention = RetentionPass(store, RetentionSettings(retention_s=7 * DAY_S, max_bytes=bound))

    with caplog.at_level(logging.WARNING, logger="connector.outbox.retention"):
        report = await retention.run_once()

    assert report.over_bound and report.for_bound[Kind.CDR] == 200
    assert sorted(states(store.path)) == sorted(ids)  # every pending and failed row is still there
    (warning,) = [record for record in caplog.records if record.levelno == logging.WARNING]
    line = warning.getMessage()
    assert "\n" not in line
    assert "OUTBOX_MAX_MB=3" in line and "7,900 pending, 100 failed" in line and "fix delivery" in line
    assert gauge("outbox_over_bound") == 1

    # Storing goes on past the bound, and each pass says so again.
    assert await store.append_cdrs([build_cdr(n) for n in range(30_000, 30_500)]) == 500
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="connector.outbox.retention"):
        assert (await retention.run_once()).over_bound
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    assert len(states(store.path)) == 8500

    # Once delivery is fixed, the bound holds again (oldest sent rows deleted) and the gauge says so.
    while due := await store.due_cdrs(500):
        await store.mark_sent(Kind.CDR, [row.id for row in due])
    report = await retention.run_once()
    assert not report.over_bound and report.for_bound[Kind.CDR] > 0
    assert report.space.in_use_bytes <= bound
    assert all(i in states(store.path) for i in failed)
    assert gauge("outbox_over_bound") == 0


async def test_zero_means_no_bound(store: Store, clock: Clock) -> None:
    await fill_sent_days(store, clock, days=2, per_day=300)
    report = await RetentionPass(store, RetentionSettings(retention_s=365 * DAY_S)).run_once()
    assert report.purged == 0 and not report.over_bound
    assert len(states(store.path)) == 600


# -- space comes back ----------------------------------------------------------------------------


async def test_freed_pages_are_given_back_and_the_file_shrinks(store: Store, clock: Clock) -> None:
    await fill_sent_days(store, clock, days=2, per_day=1500)
    await store.checkpoint()
    before = store.path.stat().st_size
    clock.at_day(1.5)  # day-0 rows are past a one-day retention, day-1 rows not yet
    retention = RetentionPass(store, RetentionSettings(retention_s=DAY_S), vacuum_step_pages=16)

    report = await retention.run_once()

    assert report.by_age[Kind.CDR] == 1500
    assert report.pages_given_back > 0 and report.space.freelist_count == 0
    after = store.path.stat().st_size
    assert after == report.space.page_count * report.space.page_size  # the checkpoint truncated it
    assert after < before * 0.65, (before, after)


async def test_a_steady_rate_keeps_the_file_flat(store: Store, clock: Clock) -> None:
    retention = RetentionPass(store, RetentionSettings(retention_s=3 * DAY_S))
    sizes = []
    for day in range(15):
        ids = await add_cdrs(store, day * 300, 300, clock.at_day(day))
        await store.mark_sent(Kind.CDR, ids)
        await retention.run_once()
        sizes.append(store.path.stat().st_size)
    settled = sizes[4:]  # past the retention, the file holds about the same number of rows
    assert max(settled) <= min(settled) * 1.15, sizes


# -- incremental vacuum in the file --------------------------------------------------------------


def auto_vacuum(path: Path) -> int:
    with sqlite3.connect(path) as db:
        (mode,) = db.execute("PRAGMA auto_vacuum").fetchone()
    db.close()
    return int(mode)


async def test_a_new_outbox_has_incremental_vacuum(store: Store) -> None:
    assert auto_vacuum(store.path) == 2  # INCREMENTAL


async def test_an_older_outbox_is_converted_once_at_its_upgrade(outbox_path: Path) -> None:
    engine = create_engine(f"sqlite:///{outbox_path}", poolclass=pool.NullPool)
    with engine.begin() as connection:
        config = migrate._alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    engine.dispose()
    with sqlite3.connect(outbox_path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "INSERT INTO cdr (received_at, dedupe_key, identity, uniqueid, raw, next_attempt_at, updated_at)"
            " VALUES ('2026-01-01T00:00:00Z', 'k#1', 'k', 'u', '[]', '2026-01-01T00:00:00Z', 'x')"
        )
    db.close()
    assert auto_vacuum(outbox_path) == 0

    store = await Store.open(outbox_path)
    try:
        assert [row.dedupe_key for row in await store.due_cdrs(10)] == ["k#1"]
        assert auto_vacuum(outbox_path) == 2
    finally:
        await store.close()


# -- configuration -------------------------------------------------------------------------------


def test_the_retention_settings_come_from_the_environment(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = RetentionSettings.from_settings(load_settings())
    assert defaults == RetentionSettings(retention_s=7 * DAY_S, interval_s=3600.0, max_bytes=1024 * MIB)
    monkeypatch.setenv("OUTBOX_MAX_MB", "0")
    monkeypatch.setenv("OUTBOX_PURGE_INTERVAL", "0.5")
    monkeypatch.setenv("OUTBOX_RETENTION_DAYS", "0.5")
    assert RetentionSettings.from_settings(load_settings()) == RetentionSettings(DAY_S / 2, 0.5, 0)


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OUTBOX_MAX_MB", "-1", "OUTBOX_MAX_MB: must be 0 (no bound) or a size in MB, e.g. 1024"),
        ("OUTBOX_MAX_MB", "lots", "OUTBOX_MAX_MB: input should be a valid number"),
        ("OUTBOX_PURGE_INTERVAL", "0", "OUTBOX_PURGE_INTERVAL: input should be greater than 0"),
    ],
)
def test_a_bad_retention_setting_is_one_line(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as raised:
        load_settings()
    (line,) = raised.value.problems
    assert line.startswith(expected)
