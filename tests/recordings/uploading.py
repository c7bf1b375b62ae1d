"""What the uploader tests share: the API key, mapping options, pacing, queuing files, waiting on rows."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC
from pathlib import Path

from connector.api.client import ApiClient
from connector.cdr.mapping import MappingOptions
from connector.outbox.records import NewRecording, RecordingRow, State
from connector.outbox.store import Store
from connector.recordings.uploader import RecordingUploader, UploadSettings
from connector.timeutil import utc_now
from tests.doubles.receiver import Receiver

KEY = "sk_" + "r" * 32
OPTIONS = MappingOptions(zone=UTC, internal_pattern=re.compile(r"^[0-9]{2,6}$"))


def pace(spool: Path, **changes: object) -> UploadSettings:
    """Fast pacing for tests: no CDR wait, short retries."""
    settings: dict[str, object] = {
        "cdr_wait_s": 0.0,
        "cdr_recheck_s": 0.05,
        "idle_poll_s": 0.2,
        "retry_base_s": 0.05,
        "retry_cap_s": 0.2,
        "watch_paths": (spool,),
        **changes,
    }
    return UploadSettings(**settings)  # type: ignore[arg-type]


def uploader_for(store: Store, api: ApiClient, settings: UploadSettings) -> RecordingUploader:
    return RecordingUploader(store, api, OPTIONS, settings, asyncio.Event())


async def add_recording(store: Store, path: Path, uniqueid: str | None = None) -> RecordingRow:
    """Queue a file as the watcher would (its real path, size and mtime) and return its row."""
    status = await asyncio.to_thread(path.stat)
    record = NewRecording(
        path=str(await asyncio.to_thread(path.resolve)),
        size=status.st_size,
        mtime=status.st_mtime,
        detected_at=utc_now(),
        uniqueid=uniqueid,
    )
    assert await store.append_recordings([record]) == 1
    return next(row for row in await all_rows(store) if row.path == record.path)


async def all_rows(store: Store) -> list[RecordingRow]:
    return await store.get_recordings(list(range(1, 200)))


async def until(done: Callable[[], object], timeout_s: float = 20.0) -> None:
    """Poll until `done()` is true (state that a receiver thread or another task changes)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if done():
                return
            await asyncio.sleep(0.02)


async def run_until_settled(uploader: RecordingUploader, store: Store, count: int) -> list[RecordingRow]:
    """Run the uploader until `count` rows are no longer pending; return every row."""
    rows: list[RecordingRow] = []

    async def watch() -> None:
        nonlocal rows
        while True:
            rows = await all_rows(store)
            if sum(row.state is not State.PENDING for row in rows) >= count:
                return
            await asyncio.sleep(0.05)

    task = asyncio.create_task(uploader.run())
    try:
        async with asyncio.timeout(30):
            await watch()
    finally:
        uploader.stop()
        await task
    return await all_rows(store)


def received(receiver: Receiver) -> dict[str, dict[str, object]]:
    """What the receiver accepted, by recording_id."""
    with receiver.state.lock:
        return {key: dict(value) for key, value in receiver.state.recordings.items()}
