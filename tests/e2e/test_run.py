"""`connector run` end to end: fake AMI server → real subprocess → loopback receiver."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
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
from tests.paths import RECORDING_FIXTURES

pytestmark = pytest.mark.timeout(180)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def metric(text: str, name: str) -> float:
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    assert values, f"{name} not exported"
    return values[0]


async def test_frames_in_rows_out_delivered_and_sigterm_flushes(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    env = connector_env(tmp_path, ami, receiver)
    db = tmp_path / "outbox.db"
    connector = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(1)
    await ami.send_cdrs(300)
    await eventually(lambda: count_rows(db) == 300, what="300 rows stored")
    await eventually(lambda: receiver.state.summary()["cdrs"] == 300, what="300 CDRs delivered")

    base = f"http://127.0.0.1:{env['MONITORING_PORT']}"
    status, body = http_get(base + "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert http_get(base + "/readyz")[0] == 200
    await eventually(lambda: metric(http_get(base + "/metrics")[1], "cdrs_sent_total") == 300)
    metrics_text = http_get(base + "/metrics")[1]
    assert metric(metrics_text, "ami_connection_status") == 1
    assert metric(metrics_text, "cdrs_stored_total") == 300
    assert metric(metrics_text, "asterisk_cdr_queue_depth") == 0

    # Frames written right before SIGTERM must all be on disk after a clean stop.
    await ami.send_cdrs(500, start=300)
    assert await connector.stop() == 0
    assert count_rows(db) == 800
    assert "CDR monitor stopped" in connector.log
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert API_KEY not in connector.log and AMI_SECRET not in connector.log


async def test_sigkill_leaves_an_intact_outbox_and_the_next_start_carries_on(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    receiver.refuse_key(True)  # keep everything pending across the kill
    env = connector_env(tmp_path, ami, receiver)
    db = tmp_path / "outbox.db"
    first = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(1)
    await ami.send_cdrs(2000)
    await eventually(lambda: count_rows(db) >= 500, what="rows being stored")
    await first.kill()
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    stored_before = count_rows(db)

    receiver.refuse_key(False)
    second = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(2)
    await ami.send_cdrs(100, start=5000)
    await eventually(lambda: count_rows(db) == stored_before + 100, what="new rows after restart")
    await eventually(
        lambda: receiver.state.summary()["cdrs"] == stored_before + 100, what="backlog delivered"
    )
    assert await second.stop() == 0
    assert count_rows(db, "state = 'sent'") == stored_before + 100


async def test_kill_between_post_and_mark_sent_resends_with_the_same_event_ids(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    env = connector_env(tmp_path, ami, receiver)
    db = tmp_path / "outbox.db"
    receiver.set_hold(30)  # the API takes the batch, the answer never comes back in time
    first = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(1)
    await ami.send_cdrs(40)
    await eventually(lambda: receiver.state.summary()["cdrs"] == 40, what="batch received")
    await first.kill()
    assert count_rows(db, "state = 'pending'") == 40

    receiver.set_hold(0)
    second = await ConnectorProcess(env, tmp_path).start()
    await eventually(lambda: count_rows(db, "state = 'sent'") == 40, what="rows marked sent")
    assert await second.stop() == 0
    summary = receiver.state.summary()
    assert summary["cdrs"] == 40  # the same event_ids: the API deduplicates
    assert summary["duplicates"] == 40


async def test_a_second_run_on_the_same_data_dir_refuses_to_start(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    env = connector_env(tmp_path, ami, receiver)
    first = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(1)
    second_env = {**env, "MONITORING_PORT": str(int(env["MONITORING_PORT"]) + 1)}
    second = await ConnectorProcess(second_env, tmp_path).start()
    assert await second.wait() == 2
    assert "another connector" in second.log and "Traceback" not in second.log
    assert await first.stop() == 0


def test_missing_configuration_is_one_line_per_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "connector", "run"],
        env={"DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "API_KEY": "sk_short"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any(line.startswith("configuration error: API_KEY:") for line in lines)
    assert "Traceback" not in result.stderr and "sk_short" not in result.stderr


async def test_recordings_are_uploaded_and_a_run_with_the_watcher_stops_cleanly(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    spool = tmp_path / "monitor"
    spool.mkdir()
    env = connector_env(
        tmp_path,
        ami,
        receiver,
        RECORDING_WATCHER_ENABLED="true",
        RECORDING_WATCH_PATHS=str(spool),
        RECORDING_STABILIZATION_TIME="0.3",
        RECORDING_CDR_WAIT_SECONDS="0",
    )
    connector = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(1)
    await eventually(lambda: "for recordings" in connector.log, what="the watcher running")
    recording = (RECORDING_FIXTURES / "lab-1795735443.50.wav").read_bytes()
    (spool / "lab-1795735443.50.wav").write_bytes(recording)
    await eventually(lambda: receiver.state.summary()["recordings"] == 1, what="recording uploaded")
    assert await connector.stop() == 0
    assert "Traceback" not in connector.log
    (uploaded,) = receiver.state.snapshot()["recording_list"]
    assert uploaded["uniqueid"] == "1795735443.50"
    assert uploaded["received_size"] == len(recording)
    assert uploaded["received_sha256"] == hashlib.sha256(recording).hexdigest()
