"""/healthz and /readyz transitions, and secrets at DEBUG level, against a real `connector run`."""

from __future__ import annotations

import json
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.doubles.ami_server import FakeAmiServer
from tests.doubles.receiver import Receiver
from tests.e2e.harness import (
    AMI_SECRET,
    API_KEY,
    ConnectorProcess,
    connector_env,
    count_rows,
    eventually,
)

pytestmark = pytest.mark.timeout(180)


def probe(base: str, path: str) -> int:
    try:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            json.loads(response.read())
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


async def test_readyz_follows_the_ami_session(tmp_path: Path, ami: FakeAmiServer, receiver: Receiver) -> None:
    env = connector_env(tmp_path, ami, receiver)
    base = f"http://127.0.0.1:{env['MONITORING_PORT']}"
    connector = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(1)
    await eventually(lambda: probe(base, "/readyz") == 200, what="ready")
    await ami.go_down()
    await eventually(lambda: probe(base, "/readyz") == 503, what="not ready without AMI")
    assert probe(base, "/healthz") == 200  # an AMI outage is not a reason to restart the connector
    await ami.start()
    await ami.wait_for_logins(2)
    await eventually(lambda: probe(base, "/readyz") == 200, what="ready again")
    assert await connector.stop() == 0
    assert "reconnected" in connector.log.lower() or "gap" in connector.log.lower()


async def test_healthz_fails_while_the_outbox_is_locked_and_nothing_is_lost(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    env = connector_env(tmp_path, ami, receiver, LOG_LEVEL="DEBUG")
    base = f"http://127.0.0.1:{env['MONITORING_PORT']}"
    db = tmp_path / "outbox.db"
    connector = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(1)
    await eventually(lambda: probe(base, "/healthz") == 200, what="healthy")

    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another process holds the database: every write fails
    try:
        await ami.send_cdrs(50)
        await eventually(lambda: probe(base, "/healthz") == 503, timeout_s=60, what="unhealthy")
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    await eventually(lambda: probe(base, "/healthz") == 200, timeout_s=60, what="healthy again")
    await eventually(lambda: count_rows(db) == 50, what="the buffered CDRs stored")
    await eventually(lambda: receiver.state.summary()["cdrs"] == 50, what="delivered")
    assert await connector.stop() == 0
    log = connector.log
    assert "DEBUG" in log
    assert API_KEY not in log and AMI_SECRET not in log
