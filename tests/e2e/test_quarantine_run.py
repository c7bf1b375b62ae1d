"""A damaged outbox never stops `connector run`: moved aside intact, a fresh outbox, CDRs still delivered."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from connector.outbox.quarantine import companion, quarantined_files
from tests.doubles.ami_server import FakeAmiServer
from tests.doubles.receiver import Receiver
from tests.e2e.harness import ConnectorProcess, connector_env, count_rows, eventually
from tests.e2e.test_run import http_get, metric
from tests.outbox.test_quarantine import DAMAGES, Damage, digests

pytestmark = pytest.mark.timeout(180)

CDRS = 20


def lines_with(log: str, text: str) -> list[str]:
    return [line for line in log.splitlines() if text in line]


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
async def test_run_moves_a_damaged_outbox_aside_and_goes_on_collecting(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver, damage: Damage
) -> None:
    env = connector_env(tmp_path, ami, receiver)
    db = tmp_path / "outbox.db"
    await damage(db)
    before = digests(db)

    first = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(1)
    await ami.send_cdrs(CDRS)
    await eventually(lambda: receiver.state.summary()["cdrs"] == CDRS, what="CDRs delivered after the move")
    metrics = http_get(f"http://127.0.0.1:{env['MONITORING_PORT']}/metrics")[1]
    assert metric(metrics, "outbox_quarantined_total") == 1
    assert await first.stop() == 0

    [moved] = quarantined_files(db)
    moved_bytes = digests(moved)
    assert all(moved_bytes[suffix] == digest for suffix, digest in before.items())  # byte for byte
    assert count_rows(db) == CDRS  # the fresh outbox holds only what came after
    [error] = lines_with(first.log, "moved it aside")
    assert " ERROR " in error and str(db) in error
    assert f"`connector salvage {moved}`" in error
    if "-wal" in before:
        assert companion(moved, "-wal").name in error
    assert "Traceback" not in first.log

    # The next start has nothing to move, and says the file is still waiting to be salvaged.
    second = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(2)
    metrics = http_get(f"http://127.0.0.1:{env['MONITORING_PORT']}/metrics")[1]
    assert metric(metrics, "outbox_quarantined_total") == 0
    assert await second.stop() == 0
    [warning] = lines_with(second.log, "moved aside at earlier starts")
    assert " WARNING " in warning and str(moved) in warning
    assert not lines_with(second.log, "moved it aside")
    assert quarantined_files(db) == [moved]
    assert digests(moved) == moved_bytes
    assert count_rows(db, "state = 'sent'") == CDRS


async def test_run_refuses_another_applications_database_and_moves_nothing(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    db = tmp_path / "outbox.db"
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    before = digests(db)
    connector = await ConnectorProcess(connector_env(tmp_path, ami, receiver), tmp_path).start()
    assert await connector.wait() == 2
    assert lines_with(connector.log, "is not a connector outbox (it holds tables users)")
    assert "Traceback" not in connector.log
    assert digests(db) == before
    assert quarantined_files(db) == []
