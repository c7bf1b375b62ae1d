"""Retention in `connector run`: short retention, interval and bound set by environment variables."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from tests.doubles.ami_server import FakeAmiServer
from tests.doubles.receiver import Receiver
from tests.e2e.harness import ConnectorProcess, connector_env, count_rows, eventually

pytestmark = pytest.mark.timeout(180)

PASS_LINE = "retention: purged"
INTERVAL_S = 0.3
RETENTION_S = 1.0


def metrics_text(env: dict[str, str]) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{env['MONITORING_PORT']}/metrics", timeout=5) as response:
        return str(response.read().decode())


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def passes(connector: ConnectorProcess) -> int:
    """Retention passes logged so far (each pass logs one line: INFO, or DEBUG when idle)."""
    return connector.log.count(PASS_LINE)


async def test_sent_rows_are_purged_by_run_pending_and_failed_rows_survive(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    env = connector_env(
        tmp_path,
        ami,
        receiver,
        OUTBOX_RETENTION_DAYS=str(RETENTION_S / 86400),
        OUTBOX_PURGE_INTERVAL=str(INTERVAL_S),
        LOG_LEVEL="DEBUG",
    )
    db = tmp_path / "outbox.db"
    receiver.poison("dst", "203")  # synthetic CDRs 3, 53: rejected by the API, kept as failed
    connector = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(1)
    await ami.send_cdrs(100)
    await eventually(lambda: receiver.state.summary()["cdrs"] == 98, what="98 CDRs delivered")
    await eventually(lambda: count_rows(db, "state = 'failed'") == 2, what="2 CDRs failed")
    receiver.refuse_key(True)  # what arrives now stays pending
    await ami.send_cdrs(50, start=100)
    await eventually(lambda: count_rows(db, "state = 'pending'") == 50, what="50 pending rows")

    await eventually(lambda: count_rows(db, "state = 'sent'") == 0, what="sent rows purged")
    # Passes run INTERVAL_S apart at least: after this many more, every row is older than the
    # retention at some pass, so pending and failed rows have been offered to it.
    seen = passes(connector)
    await eventually(lambda: passes(connector) >= seen + int(RETENTION_S / INTERVAL_S) + 2, what="passes")

    assert count_rows(db, "state = 'failed'") == 2
    assert count_rows(db, "state = 'pending'") == 50
    assert count_rows(db) == 52
    text = metrics_text(env)
    assert sample(text, 'outbox_purged_rows_total{table="cdr"}') == 98
    assert sample(text, "outbox_over_bound") == 0
    assert await connector.stop() == 0
    assert "Traceback" not in connector.log


async def test_pending_rows_over_the_bound_are_kept_and_reported_then_the_bound_holds(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    env = connector_env(tmp_path, ami, receiver, OUTBOX_MAX_MB="6", OUTBOX_PURGE_INTERVAL=str(INTERVAL_S))
    db = tmp_path / "outbox.db"
    receiver.refuse_key(True)
    connector = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(1)
    await ami.send_cdrs(9000)  # ~9 MB of pending rows
    await eventually(lambda: count_rows(db) == 9000, what="9000 rows stored")

    await eventually(lambda: "outbox over its size bound" in connector.log, what="the warning")
    await eventually(lambda: sample(metrics_text(env), "outbox_over_bound") == 1, what="the gauge")
    assert count_rows(db, "state = 'pending'") == 9000  # none deleted to make room
    assert sample(metrics_text(env), "outbox_max_bytes") == 6 * 1024 * 1024
    warning = next(line for line in connector.log.splitlines() if "outbox over its size bound" in line)
    assert "OUTBOX_MAX_MB=6" in warning and "9,000 pending" in warning

    # Delivery fixed: rows are sent, and the oldest sent ones go to bring the outbox under the bound.
    receiver.refuse_key(False)
    await eventually(lambda: receiver.state.summary()["cdrs"] == 9000, timeout_s=90, what="delivery")
    await eventually(lambda: sample(metrics_text(env), "outbox_over_bound") == 0, what="under the bound")
    left = count_rows(db)
    assert 0 < left < 9000 and count_rows(db, "state = 'pending'") == 0
    assert sample(metrics_text(env), 'outbox_purged_rows_total{table="cdr"}') == 9000 - left
    assert await connector.stop() == 0
