"""The watcher on real folders: stabilization, existing files, symlinks, odd names, real events."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from connector.config import load_settings
from connector.errors import OutboxError
from connector.metrics import REGISTRY
from connector.outbox.records import NewRecording
from connector.outbox.store import Store
from connector.recordings.checks import RecordingRules
from connector.recordings.watcher import RecordingWatcher
from tests.paths import RECORDING_FIXTURES
from tests.recordings.media import asterisk_wav_header, write_wav

STABLE_S = 0.2
FIXTURE_WAV = RECORDING_FIXTURES / "lab-1795735443.50.wav"


class Collector:
    """A sink that keeps what it is given and reports every record as new."""

    def __init__(self) -> None:
        self.records: list[NewRecording] = []
        self.arrived = asyncio.Queue[NewRecording]()

    async def __call__(self, records: Sequence[NewRecording]) -> int:
        self.records.extend(records)
        for record in records:
            self.arrived.put_nowait(record)
        return len(records)

    @property
    def paths(self) -> list[str]:
        return [r.path for r in self.records]

    async def next(self, timeout_s: float = 30.0) -> NewRecording:
        async with asyncio.timeout(timeout_s):
            return await self.arrived.get()


def watcher_for(
    roots: Sequence[Path], sink: Collector, rules: RecordingRules | None = None, **options: object
) -> RecordingWatcher:
    settings: dict[str, object] = {"stabilization_s": STABLE_S, **options}
    return RecordingWatcher(roots, rules or RecordingRules(), sink, **settings)  # type: ignore[arg-type]


async def settle(watcher: RecordingWatcher) -> int:
    """Let the stabilization time pass, then judge what is due."""
    await asyncio.sleep(STABLE_S * 1.5)
    return await watcher.run_once()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    folder = tmp_path / "monitor"
    folder.mkdir()
    return folder


def detected_total() -> float:
    return REGISTRY.get_sample_value("recordings_detected_total") or 0.0


# --- driven step by step ----------------------------------------------------------------------


async def test_existing_files_are_taken_when_asked(spool: Path) -> None:
    shutil.copy(FIXTURE_WAV, spool)
    (spool / "day").mkdir()
    write_wav(spool / "day" / "1732650000.42-in.wav", 1.0)
    sink = Collector()
    watcher = watcher_for([spool], sink, process_existing=True)
    await watcher.start()
    assert await watcher.run_once() == 0  # not stable yet: seen once
    assert await settle(watcher) == 2
    assert sorted(r.uniqueid or "" for r in sink.records) == ["1732650000.42", "1795735443.50"]
    record = next(r for r in sink.records if r.uniqueid == "1795735443.50")
    status = (spool / FIXTURE_WAV.name).stat()
    assert (record.path, record.size, record.mtime) == (
        str(spool / FIXTURE_WAV.name),
        status.st_size,
        status.st_mtime,
    )
    await watcher.scan()
    assert await settle(watcher) == 0  # same path, size and mtime: once per session
    assert len(sink.records) == 2


async def test_existing_files_are_left_alone_by_default(spool: Path) -> None:
    old = write_wav(spool / "old.wav", 1.0)
    sink = Collector()
    watcher = watcher_for([spool], sink)
    await watcher.start()
    await watcher.scan()
    assert await settle(watcher) == 0
    write_wav(spool / "new.wav", 1.0)
    await watcher.scan()
    assert await settle(watcher) == 1
    with old.open("ab") as out:  # a file that changes after start is a new recording state
        out.write(bytes(1000))
    await watcher.scan()
    assert await settle(watcher) == 1
    assert sink.paths == [str(spool / "new.wav"), str(old)]


async def test_a_growing_file_waits_until_it_stops(spool: Path) -> None:
    path = spool / "grow.gsm"
    path.write_bytes(bytes(33 * 100))
    sink = Collector()
    watcher = watcher_for([spool], sink, process_existing=True)
    await watcher.start()
    await asyncio.sleep(STABLE_S * 1.5)
    with path.open("ab") as out:
        out.write(bytes(33 * 100))
    assert await watcher.run_once() == 0  # changed since it was seen: the clock starts again
    assert watcher.pending == 1
    assert await settle(watcher) == 1
    assert [r.size for r in sink.records] == [33 * 200]


async def test_each_rule_refuses_once_and_says_why(spool: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="connector.recordings")
    write_wav(spool / "tiny.wav", 0.01)
    write_wav(spool / "short.wav", 0.5)
    write_wav(spool / "test-call.wav", 2.0)
    write_wav(spool / "other-call.wav", 2.0)
    write_wav(spool / "out-call.mp4", 2.0)
    old = write_wav(spool / "out-old.wav", 2.0)
    os.utime(old, (old.stat().st_mtime - 3 * 3600,) * 2)
    kept = write_wav(spool / "out-ok.wav", 2.0)
    rules = RecordingRules(
        min_size=1024,
        include_patterns=("out-", "tiny", "short", "test"),
        exclude_patterns=("test",),
        min_duration_s=1.0,
        max_age_s=2 * 3600,
    )
    sink = Collector()
    watcher = watcher_for([spool], sink, rules, process_existing=True)
    await watcher.start()
    assert await settle(watcher) == 1
    assert sink.paths == [str(kept)]
    reasons = [r.getMessage() for r in caplog.records if "not uploading" in r.getMessage()]
    assert len(reasons) == 2
    assert any("tiny.wav" in m and "RECORDING_MIN_FILE_SIZE" in m for m in reasons)
    assert any("short.wav" in m and "RECORDING_MIN_DURATION" in m for m in reasons)
    await watcher.scan()
    assert await settle(watcher) == 0
    assert len([r for r in caplog.records if "not uploading" in r.getMessage()]) == 2


async def test_symlink_escape_is_refused(
    tmp_path: Path, spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    outside = tmp_path / "secrets"
    outside.mkdir()
    write_wav(outside / "passwd.wav", 1.0)
    (outside / "sub").mkdir()
    write_wav(outside / "sub" / "deep.wav", 1.0)
    (spool / "escape.wav").symlink_to(outside / "passwd.wav")
    (spool / "dir-link").symlink_to(outside / "sub", target_is_directory=True)
    inside = write_wav(spool / "real-1795735443.50.wav", 1.0)
    (spool / "alias.wav").symlink_to(inside)
    (spool / "loop.wav").symlink_to(spool / "loop.wav")
    (spool / "dangling.wav").symlink_to(tmp_path / "nowhere.wav")
    sink = Collector()
    watcher = watcher_for([spool], sink, process_existing=True)
    await watcher.start()
    assert await settle(watcher) == 1
    assert sink.paths == [str(inside)]  # the link inside leads to the same real file: once
    refusals = [r for r in caplog.records if "outside RECORDING_WATCH_PATHS" in r.getMessage()]
    assert len(refusals) == 1 and "escape.wav" in refusals[0].getMessage()
    await watcher.scan()
    assert await settle(watcher) == 0
    assert len([r for r in caplog.records if "outside" in r.getMessage()]) == 1


ODD_NAMES = [
    'it\'s a "quoted" name.wav',
    "with  spaces 1795735443.50 .wav",
    "ünïcødé-日本語-1795735443.51.wav",
    "@leading-at.wav",
    "<angle>|pipe;semi&amp$(x)`y`.wav",
    "-leading-dash.wav",
    "new\nline.wav",
]


async def test_odd_names_are_taken_verbatim(spool: Path) -> None:
    for name in ODD_NAMES:
        write_wav(spool / name, 1.0)
    bad = spool / os.fsdecode(b"\xff\xfe-not-utf8.wav")
    write_wav(bad, 1.0)
    os.mkfifo(spool / "pipe.wav")  # opening a FIFO would block forever: never touched
    sink = Collector()
    watcher = watcher_for([spool], sink, process_existing=True)
    await watcher.start()
    assert await settle(watcher) == len(ODD_NAMES)
    assert sorted(sink.paths) == sorted(str(spool / name) for name in ODD_NAMES)
    ids = {Path(r.path).name: r.uniqueid for r in sink.records}
    assert ids["ünïcødé-日本語-1795735443.51.wav"] == "1795735443.51"
    assert ids["with  spaces 1795735443.50 .wav"] == "1795735443.50"


async def test_an_unfinished_wav_waits_for_its_header(spool: Path) -> None:
    path = spool / "live.wav"
    path.write_bytes(asterisk_wav_header() + bytes(32768))
    sink = Collector()
    watcher = watcher_for([spool], sink, process_existing=True)
    await watcher.start()
    assert await settle(watcher) == 0
    assert watcher.pending == 1
    path.write_bytes(asterisk_wav_header(32768) + bytes(32768))  # Asterisk closes the file
    await watcher.scan()
    assert await settle(watcher) == 1


async def test_an_unfinished_wav_is_taken_after_the_grace(
    spool: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (spool / "crashed.wav").write_bytes(asterisk_wav_header() + bytes(32768))
    sink = Collector()
    watcher = watcher_for([spool], sink, process_existing=True, unfinished_grace_s=STABLE_S * 2)
    await watcher.start()
    assert await settle(watcher) == 0
    assert await settle(watcher) == 1
    assert any("taking it as finished" in r.getMessage() for r in caplog.records)


async def test_outbox_errors_keep_the_files_for_later(spool: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_wav(spool / "a.wav", 1.0)
    collector = Collector()
    failures = 2

    async def flaky(records: Sequence[NewRecording]) -> int:
        nonlocal failures
        if failures:
            failures -= 1
            raise OutboxError("disk full")
        return await collector(records)

    watcher = RecordingWatcher(
        [spool],
        RecordingRules(),
        flaky,
        stabilization_s=STABLE_S,
        process_existing=True,
        retry_delay_s=0.05,
    )
    await watcher.start()
    assert await settle(watcher) == 0
    assert await settle(watcher) == 0
    assert await settle(watcher) == 1
    assert collector.paths == [str(spool / "a.wav")]
    assert len([r for r in caplog.records if "disk full" in r.getMessage()]) == 1


async def test_the_real_outbox_stores_each_file_once_across_restarts(spool: Path, store: Store) -> None:
    shutil.copy(FIXTURE_WAV, spool)
    before = detected_total()
    for _session in range(2):
        watcher = RecordingWatcher(
            [spool],
            RecordingRules(),
            store.append_recordings,
            stabilization_s=STABLE_S,
            process_existing=True,
        )
        await watcher.start()
        await settle(watcher)
    rows = await store.due_recordings(10)
    assert [(r.path, r.uniqueid) for r in rows] == [(str(spool / FIXTURE_WAV.name), "1795735443.50")]
    assert detected_total() - before == 1


# --- the real loops, with real filesystem events ----------------------------------------------


@contextlib.asynccontextmanager
async def running(watcher: RecordingWatcher) -> AsyncIterator[RecordingWatcher]:
    task = asyncio.create_task(watcher.run())
    try:
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def write_like_asterisk(path: Path, seconds: float, chunks: int) -> int:
    """Write a WAV the way format_wav does: zero sizes first, audio in bursts, sizes on close."""
    audio = bytes(16000 * 1)  # one second per burst is plenty; bursts come faster than that
    with path.open("wb") as out:
        out.write(asterisk_wav_header())
        for _ in range(chunks):
            out.write(audio)
            out.flush()
            await asyncio.sleep(seconds / chunks)
        out.seek(0)
        out.write(asterisk_wav_header(len(audio) * chunks))
    return 44 + len(audio) * chunks


async def test_a_recording_written_over_seconds_is_stored_once_when_done(spool: Path) -> None:
    sink = Collector()
    watcher = watcher_for([spool], sink, rescan_interval_s=0.3)
    async with running(watcher):
        await asyncio.sleep(0.3)  # let the watch start
        path = spool / "sub" / "lab-1795735443.77.wav"
        path.parent.mkdir()
        size = await write_like_asterisk(path, seconds=2.0, chunks=16)
        record = await sink.next()
        assert (record.path, record.size, record.uniqueid) == (str(path), size, "1795735443.77")
        await asyncio.sleep(1.0)  # several rescans and stabilization periods: still once
    assert len(sink.records) == 1


async def test_events_alone_find_new_files(spool: Path) -> None:
    sink = Collector()
    watcher = watcher_for([spool], sink, rescan_interval_s=3600)
    async with running(watcher):
        await asyncio.sleep(0.3)
        tmp = spool.parent / "staging.wav"
        write_wav(tmp, 1.0)
        tmp.rename(spool / "moved-in.wav")  # MixMonitor's post-command `mv` pattern
        assert (await sink.next()).path == str(spool / "moved-in.wav")


async def test_a_missing_watch_path_is_reported_once_and_used_when_it_appears(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="connector.recordings")
    missing = tmp_path / "not-yet"
    present = tmp_path / "present"
    present.mkdir()
    sink = Collector()
    watcher = watcher_for([missing, present], sink, root_check_interval_s=0.1)
    async with running(watcher):
        await asyncio.sleep(0.5)  # several root checks while it is missing
        missing.mkdir()
        write_wav(missing / "early.wav", 1.0)  # before the watch reaches it: found by the scan
        assert (await sink.next()).path == str(missing / "early.wav")
        write_wav(missing / "later.wav", 1.0)
        assert (await sink.next()).path == str(missing / "later.wav")
    warnings = [r.getMessage() for r in caplog.records if "does not exist" in r.getMessage()]
    assert warnings == [f"watch path {missing} does not exist; it will be watched once it appears"]
    assert any("appeared" in r.getMessage() for r in caplog.records)


async def test_a_folder_moved_in_is_walked(spool: Path) -> None:
    sink = Collector()
    watcher = watcher_for([spool], sink, rescan_interval_s=3600)
    async with running(watcher):
        await asyncio.sleep(0.3)
        batch = spool.parent / "batch"
        (batch / "inner").mkdir(parents=True)
        write_wav(batch / "inner" / "a.wav", 1.0)
        write_wav(batch / "b.wav", 1.0)
        batch.rename(spool / "batch")  # one event for the folder, none for the files in it
        found = {(await sink.next()).path, (await sink.next()).path}
    assert found == {str(spool / "batch" / "inner" / "a.wav"), str(spool / "batch" / "b.wav")}


async def test_a_watch_path_that_is_a_symlink_is_followed(tmp_path: Path, spool: Path) -> None:
    link = tmp_path / "monitor-link"
    link.symlink_to(spool, target_is_directory=True)
    write_wav(spool / "x.wav", 1.0)
    sink = Collector()
    watcher = watcher_for([link], sink, process_existing=True)
    await watcher.start()
    assert await settle(watcher) == 1
    assert sink.paths == [str(spool / "x.wav")]  # the real path: what the uploader opens


@pytest.mark.usefixtures("clean_env")
async def test_built_from_settings(spool: Path) -> None:
    settings = load_settings(
        recording_watch_paths=f"{spool}, {spool.parent / 'absent'}",
        recording_stabilization_time=str(STABLE_S),
        recording_process_existing="true",
        recording_min_duration="1",
    )
    write_wav(spool / "long.wav", 1.5)
    write_wav(spool / "short.wav", 0.5)
    sink = Collector()
    watcher = RecordingWatcher.from_settings(settings, sink, rescan_interval_s=30.0)
    assert watcher.roots == (spool, spool.parent / "absent")
    await watcher.start()
    assert await settle(watcher) == 1
    assert sink.paths == [str(spool / "long.wav")]
