"""The follower on a file that changes under it: appends, partial lines, rotation, truncation."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from connector.backfill.command import import_file
from connector.backfill.follower import CsvFollower
from connector.backfill.lines import LineParser
from connector.config import load_settings
from connector.errors import ConfigError
from connector.metrics import REGISTRY
from connector.outbox.notify import NotifyingSink
from connector.outbox.records import CsvPosition
from connector.outbox.store import Store
from tests.backfill.conftest import FollowerFactory
from tests.backfill.helpers import (
    CSV_LAYOUT,
    append,
    csv_line,
    inode_and_size,
    remove,
    rotate,
    rows,
    truncate,
    write,
)
from tests.cdr.helpers import CUSTOM_LAYOUT
from tests.conftest import build_cdr


def lines(first: int, last: int) -> bytes:
    return b"".join(csv_line(n) for n in range(first, last + 1))


def stored_uniqueids(db: Path) -> list[str]:
    return [row["uniqueid"] for row in rows(db)]


def uids(first: int, last: int) -> list[str]:
    return [f"1795800000.{n}" for n in range(first, last + 1)]


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
def master(tmp_path: Path) -> Path:
    folder = tmp_path / "cdr-csv"
    folder.mkdir()
    return folder / "Master.csv"


async def test_appended_lines_are_stored_with_their_position(
    store: Store, outbox_path: Path, master: Path, make_follower: FollowerFactory
) -> None:
    write(master, lines(1, 3))
    follower = make_follower(store, master)
    assert await follower.run_once() == 3

    append(master, lines(4, 5))
    assert await follower.run_once() == 2
    assert await follower.run_once() == 0

    assert stored_uniqueids(outbox_path) == uids(1, 5)
    position = await store.csv_position(str(master))
    assert position == CsvPosition(str(master), *inode_and_size(master), 5)
    assert metric("backfill_lag_bytes") == 0


async def test_a_half_written_last_line_waits_for_its_end(
    store: Store, outbox_path: Path, master: Path, make_follower: FollowerFactory
) -> None:
    line = csv_line(2)
    write(master, lines(1, 1) + line[:40])
    follower = make_follower(store, master)

    assert await follower.run_once() == 1
    assert metric("backfill_lag_bytes") == 40
    append(master, line[40:-1])  # everything but the LF
    assert await follower.run_once() == 0
    append(master, b"\n")
    assert await follower.run_once() == 1

    assert stored_uniqueids(outbox_path) == uids(1, 2)
    assert follower.malformed == 0


async def test_malformed_lines_are_counted_logged_and_skipped(
    store: Store,
    outbox_path: Path,
    master: Path,
    make_follower: FollowerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad_quote = b'"unterminated,"1001"\n'
    short = b'"a","b","c"\n'
    bad_date = csv_line(3).replace(b"2026-11-27 10:00:03", b"27/11/2026 10:00")
    write(master, lines(1, 1) + bad_quote + lines(2, 2) + short + bad_date + b"\n" + lines(4, 4))
    before = metric("backfill_malformed_total")
    follower = make_follower(store, master)

    with caplog.at_level(logging.WARNING):
        assert await follower.run_once() == 7

    assert stored_uniqueids(outbox_path) == ["1795800000.1", "1795800000.2", "1795800000.4"]
    assert follower.malformed == 3
    assert metric("backfill_malformed_total") - before == 3
    logged = [record.getMessage() for record in caplog.records]
    assert any("line 2 skipped: bad quoting" in message for message in logged)
    assert any("line 4 skipped: 3 columns, the layout has 18" in message for message in logged)
    assert any("line 5 skipped: StartTime" in message for message in logged)
    assert (await store.csv_position(str(master))).line == 7  # type: ignore[union-attr]


async def test_rotation_finishes_the_old_file_then_reads_the_new_one(
    store: Store, outbox_path: Path, master: Path, make_follower: FollowerFactory
) -> None:
    write(master, lines(1, 2))
    follower = make_follower(store, master)
    await follower.run_once()
    append(master, lines(3, 4))  # written just before the rotation, not read yet
    rotate(master)
    write(master, lines(5, 6))

    await follower.run_once()
    await follower.run_once()
    append(master, lines(7, 7))
    await follower.run_once()

    assert stored_uniqueids(outbox_path) == uids(1, 7)
    position = await store.csv_position(str(master))
    assert position == CsvPosition(str(master), *inode_and_size(master), 3)


async def test_a_file_that_appears_later_is_read_from_its_start(
    store: Store, outbox_path: Path, master: Path, make_follower: FollowerFactory
) -> None:
    follower = make_follower(store, master, start="end")
    assert await follower.run_once() == 0
    write(master, lines(1, 2))

    assert await follower.run_once() == 2
    assert stored_uniqueids(outbox_path) == uids(1, 2)


async def test_truncation_reads_the_file_again_from_its_start(
    store: Store, outbox_path: Path, master: Path, make_follower: FollowerFactory
) -> None:
    write(master, lines(1, 3))
    follower = make_follower(store, master)
    await follower.run_once()
    truncate(master)
    append(master, lines(10, 10))

    assert await follower.run_once() == 1
    assert stored_uniqueids(outbox_path) == [*uids(1, 3), "1795800000.10"]
    assert (await store.csv_position(str(master))).line == 1  # type: ignore[union-attr]


async def test_first_start_begins_at_the_end_and_says_so_in_the_outbox(
    store: Store, outbox_path: Path, master: Path, make_follower: FollowerFactory
) -> None:
    write(master, lines(1, 3))
    first = make_follower(store, master, start="end")
    assert await first.run_once() == 0
    first.close()
    # Written while the connector was stopped: the saved position makes the next start read it.
    append(master, lines(4, 4))

    second = make_follower(store, master, start="end")
    assert await second.run_once() == 1
    assert stored_uniqueids(outbox_path) == ["1795800000.4"]
    assert (await store.csv_position(str(master))).line == 4  # type: ignore[union-attr]


async def test_first_start_from_a_date_skips_older_calls(
    store: Store, outbox_path: Path, master: Path, make_follower: FollowerFactory
) -> None:
    write(master, lines(1, 5))  # StartTime 10:00:01 ... 10:00:05, as written by the PBX
    follower = make_follower(store, master, start="2026-11-27T10:00:04")

    assert await follower.run_once() == 5
    assert stored_uniqueids(outbox_path) == uids(4, 5)
    assert follower.skipped == 3


async def test_a_restart_resumes_where_the_outbox_says(
    store: Store, outbox_path: Path, master: Path, make_follower: FollowerFactory
) -> None:
    write(master, lines(1, 3))
    await make_follower(store, master).run_once()
    append(master, lines(4, 5))

    again = make_follower(store, master)
    assert await again.run_once() == 2
    assert (again.recovered, again.known) == (2, 0)
    assert stored_uniqueids(outbox_path) == uids(1, 5)


async def test_a_file_rotated_while_stopped_is_finished_first(
    store: Store, outbox_path: Path, master: Path, make_follower: FollowerFactory
) -> None:
    write(master, lines(1, 2))
    await make_follower(store, master).run_once()
    append(master, lines(3, 3))
    rotate(master)
    write(master, lines(4, 4))

    again = make_follower(store, master)
    await again.run_once()
    await again.run_once()

    assert stored_uniqueids(outbox_path) == uids(1, 4)


async def test_a_rotated_file_gone_while_stopped_is_reported_and_the_new_one_read(
    store: Store,
    outbox_path: Path,
    master: Path,
    make_follower: FollowerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write(master, lines(1, 2))
    await make_follower(store, master).run_once()
    remove(master)
    write(master, lines(3, 3))

    with caplog.at_level(logging.WARNING):
        await make_follower(store, master).run_once()

    assert stored_uniqueids(outbox_path) == uids(1, 3)
    assert any("connector backfill" in record.getMessage() for record in caplog.records)


async def test_identical_lines_are_distinct_cdrs_even_across_restarts(
    store: Store, outbox_path: Path, master: Path, make_follower: FollowerFactory
) -> None:
    fork = csv_line(7)  # ForkCDR can write byte-identical lines: they are distinct CDRs
    write(master, lines(1, 1) + fork + fork)
    await make_follower(store, master).run_once()
    append(master, fork + lines(8, 8))

    await make_follower(store, master).run_once()
    keys = [row["dedupe_key"] for row in rows(outbox_path)]
    again = await import_file(store, master, LineParser(CSV_LAYOUT))  # a full second read

    assert (again.read, again.recovered) == (5, 0)

    assert len(keys) == 5
    assert [key.split("#")[1] for key in keys] == ["1", "1", "2", "3", "1"]
    assert [row["dedupe_key"] for row in rows(outbox_path)] == keys


async def test_the_grace_period_lets_the_ami_twin_win(store: Store, outbox_path: Path, master: Path) -> None:
    now = [100.0]
    follower = CsvFollower(
        store, master, CSV_LAYOUT, start="start", grace_s=5.0, clock=lambda: now[0], poll_interval_s=0
    )
    try:
        write(master, lines(1, 2))
        assert await follower.run_once() == 0  # just seen: too fresh
        now[0] += 4.9
        assert await follower.run_once() == 0
        now[0] += 0.2
        assert await follower.run_once() == 2
        append(master, lines(3, 3))
        assert await follower.run_once() == 0
        assert (await store.csv_position(str(master))).line == 2  # type: ignore[union-attr]
    finally:
        follower.close()


async def test_new_rows_wake_the_drainer(store: Store, master: Path, make_follower: FollowerFactory) -> None:
    woken = asyncio.Event()
    write(master, lines(1, 1))
    await store.append_cdrs([build_cdr(1)])
    await make_follower(NotifyingSink(store, woken), master).run_once()
    assert woken.is_set()


async def test_run_and_stop(
    store: Store, outbox_path: Path, master: Path, make_follower: FollowerFactory
) -> None:
    write(master, lines(1, 2))
    woken = asyncio.Event()
    follower = make_follower(NotifyingSink(store, woken), master, poll_interval_s=0.01)
    task = asyncio.create_task(follower.run())
    await asyncio.wait_for(woken.wait(), 30)
    follower.stop()
    await asyncio.wait_for(task, 30)

    assert stored_uniqueids(outbox_path) == uids(1, 2)


async def test_from_settings(store: Store, clean_env: Path) -> None:
    assert CsvFollower.from_settings(load_settings(), store) is None
    settings = load_settings(
        cdr_backfill_csv="/var/log/asterisk/cdr-custom/Master.csv",
        cdr_backfill_columns=CUSTOM_LAYOUT,
        cdr_backfill_from="start",
    )
    follower = CsvFollower.from_settings(settings, store, grace_s=1.5)
    assert follower is not None
    assert (follower.key, follower.grace_s) == ("/var/log/asterisk/cdr-custom/Master.csv", 1.5)
    with pytest.raises(ConfigError, match="CDR_BACKFILL_COLUMNS: the layout lacks UniqueID"):
        CsvFollower.from_settings(load_settings(cdr_backfill_csv="x", cdr_backfill_columns="src,dst"), store)


async def test_a_rotated_file_whose_last_line_never_ended_is_left_with_a_warning(
    store: Store, outbox_path: Path, master: Path, make_follower: FollowerFactory
) -> None:
    write(master, lines(1, 1) + csv_line(2)[:30])
    follower = make_follower(store, master)
    await follower.run_once()
    rotate(master)
    write(master, lines(3, 3))

    await follower.run_once()

    assert stored_uniqueids(outbox_path) == ["1795800000.1", "1795800000.3"]
    assert follower.malformed == 1


async def test_the_same_file_spelled_differently_keeps_its_position(
    store: Store, outbox_path: Path, master: Path, make_follower: FollowerFactory
) -> None:
    write(master, lines(1, 2))
    await make_follower(store, master).run_once()

    again = make_follower(store, f"{master.parent}//./Master.csv")
    assert await again.run_once() == 0
    assert again.key == str(master)


async def test_run_logs_a_failure_and_carries_on_once_the_cause_is_gone(
    store: Store,
    outbox_path: Path,
    master: Path,
    make_follower: FollowerFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    os.mkdir(master)  # not a readable file: e.g. a wrong mount
    woken = asyncio.Event()
    follower = make_follower(NotifyingSink(store, woken), master, poll_interval_s=0.01)
    with caplog.at_level(logging.ERROR):
        task = asyncio.create_task(follower.run())
        while not any("cannot follow" in record.getMessage() for record in caplog.records):
            await asyncio.sleep(0.01)
    os.rmdir(master)
    write(master, lines(1, 1))
    await asyncio.wait_for(woken.wait(), 60)
    follower.stop()
    await asyncio.wait_for(task, 30)

    assert stored_uniqueids(outbox_path) == ["1795800000.1"]
