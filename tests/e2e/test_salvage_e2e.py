"""`connector salvage` beside a running `connector run`: every readable pending row delivered once."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from connector.cdr.identity import event_id
from tests.doubles.ami_server import FakeAmiServer
from tests.doubles.receiver import Receiver
from tests.e2e.harness import ConnectorProcess, connector_env, count_rows, eventually
from tests.outbox.damage import build_outbox, damage_leaf

pytestmark = pytest.mark.timeout(180)

CDRS = 1500
LIVE_CDRS = 200  # arriving over AMI while salvage runs: identities apart from the damaged file's


def event_ids_by_state(path: Path, lost: set[int]) -> dict[str, set[str]]:
    """The event_ids of the damaged file's CDRs per state (read before the damage), lost ones apart."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT id, dedupe_key, state FROM cdr").fetchall()
    db.close()
    found: dict[str, set[str]] = {}
    for row_id, key, state in rows:
        found.setdefault("lost" if row_id in lost else state, set()).add(event_id(key))
    return found


async def salvage(env: Mapping[str, str], file: Path, cwd: Path) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector",
        "salvage",
        str(file),
        env=dict(env),
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, err.decode()
    return process.returncode, out.decode().strip().splitlines()[-1]


async def test_salvage_beside_run_delivers_every_readable_pending_row_once(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    # The damaged outbox, as `connector run` quarantined it: in DATA_DIR, a page of cdr_raw garbage.
    damaged = tmp_path / "outbox.db.corrupt-20261127T134500Z"
    await build_outbox(damaged, CDRS, recording_count=0)
    before = damaged.with_name("before.db")
    before.write_bytes(damaged.read_bytes())
    lost = set(damage_leaf(damaged, "cdr_raw").ids)
    expected = event_ids_by_state(before, lost)
    pending, sent = expected["pending"], expected["sent"]
    assert len(pending) > 900 and len(sent) > 400 and lost

    env = connector_env(tmp_path, ami, receiver)
    live = tmp_path / "outbox.db"
    connector = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(1)

    # Salvage while the connector holds DATA_DIR's lock and stores what AMI sends.
    flood = asyncio.create_task(ami.send_cdrs(LIVE_CDRS, start=100_000))
    _, last_line = await salvage(env, damaged, tmp_path)
    await flood
    readable = CDRS - len(lost)
    assert last_line == (
        f"salvage: read {readable:,} rows, imported {readable:,}, already present 0, unreadable {len(lost)}"
    )
    await eventually(
        lambda: receiver.state.summary()["cdrs"] == len(pending) + LIVE_CDRS,
        timeout_s=90,
        what="the salvaged pending CDRs and the live ones delivered",
    )

    # Again, still beside `run`: nothing new.
    _, again = await salvage(env, damaged, tmp_path)
    assert again.endswith(f"imported 0, already present {readable:,}, unreadable {len(lost)}")
    assert await connector.stop() == 0

    counts = receiver.state.counts
    assert all(counts[event] == 1 for event in pending), "a salvaged pending CDR was delivered twice"
    settled = sent | expected["lost"] | expected.get("failed", set()) | expected.get("filtered", set())
    assert not settled & set(counts), "a sent, settled or unreadable CDR was delivered"
    assert receiver.state.summary()["duplicates"] == 0
    assert count_rows(live, "state = 'pending'") == 0
    assert count_rows(live) == readable + LIVE_CDRS
