"""A restart keeps every row's next_attempt_at: `connector run`'s start-up takes nothing back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from connector.app import Connector
from connector.config import load_settings
from connector.demo.ports import free_port
from connector.outbox.records import CdrRow, Kind, NewRecording, RecordingRow
from connector.outbox.store import Store
from connector.timeutil import utc_now
from tests.conftest import build_cdr

PAST = "2026-01-01T00:00:00.000000Z"


async def test_the_start_up_path_keeps_each_rows_backoff(
    clean_env: Path, data_dir: Path, outbox_path: Path
) -> None:
    spool = data_dir.parent / "monitor"
    spool.mkdir()
    store = await Store.open(outbox_path)
    try:
        await store.append_cdrs([build_cdr(n) for n in range(2)])
        await store.append_recordings([NewRecording(f"/spool/{n}.wav", 2048, 1.0, PAST) for n in range(2)])
        for kind in Kind:
            await store.reschedule(kind, [1], 3600.0, "HTTP 503")
            await store.defer(kind, [2], 3600.0)
    finally:
        await store.close()
    settings = load_settings(
        data_dir=str(data_dir),
        api_key="sk_" + "a" * 32,
        api_base_url=f"http://127.0.0.1:{free_port()}",
        ami_host="127.0.0.1",
        ami_port=free_port(),  # nothing listens: the AMI client just keeps retrying
        ami_username="connector",
        ami_password="secret",
        monitoring_enabled=False,
        recording_watcher_enabled=True,
        recording_watch_paths=str(spool),
    )
    store = await Store.open(outbox_path)  # the next start
    try:
        stop = asyncio.Event()
        stop.set()  # start every part, then shut down at once
        assert await Connector(settings, store).serve(stop) == 0
        now = utc_now()
        assert await store.due_cdrs(10) == [] and await store.due_recordings(10) == []
        rows: list[CdrRow | RecordingRow] = [
            *await store.get_cdrs([1, 2]),
            *await store.get_recordings([1, 2]),
        ]
        assert [(row.attempts, row.next_attempt_at > now) for row in rows] == [(1, True), (0, True)] * 2
    finally:
        await store.close()
