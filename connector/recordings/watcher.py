"""Watch the recording folders and hand each finished recording to the outbox once.

    watchfiles events ─┐                     ┌─ unchanged after RECORDING_STABILIZATION_TIME?
    periodic rescan ───┼─► candidates ───────┤    yes: checks.decide() → accept → sink (outbox)
    files at start ────┘   real path → sig   └─   no: the clock starts again

A candidate is keyed by its real path (symlinks resolved) and its signature (device, inode, size,
mtime). A signature, once judged, is remembered for the session, so a file is stored once until it
changes; the outbox's UNIQUE(path, size, mtime) makes that hold across restarts too. Blocking work
(stat, directory walks, header reads) runs in worker threads; all state lives on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector.errors import OutboxError
from connector.metrics import RECORDINGS_DETECTED
from connector.outbox.records import NewRecording
from connector.recordings.checks import Outcome, RecordingRules, uniqueid_from_name
from connector.recordings.scan import (
    FileSig,
    Judgement,
    Sighting,
    existing_roots,
    judge_all,
    sight_paths,
    walk_tree,
)
from connector.timeutil import utc_now

if TYPE_CHECKING:
    from connector.config import Settings

FIRST_RESCAN_S = 2.0
log = logging.getLogger(__name__)

RecordingSink = Callable[[Sequence[NewRecording]], Awaitable[int]]
"""Stores recordings and returns how many were new (e.g. `Store.append_recordings`)."""

MIN_RECHECK_S = 0.1  # never look at a file that keeps changing more often than this
FORGET_MARGIN_S = 3600.0  # keep judged signatures this long past RECORDING_MAX_AGE_HOURS


@dataclass
class _Candidate:
    found: Path
    sig: FileSig
    since: float  # monotonic time this signature was first seen
    due_at: float  # monotonic time to look at it again


class RecordingWatcher:
    """Find finished recordings under the watch paths and hand each to the sink once."""

    def __init__(
        self,
        watch_paths: Iterable[Path | str],
        rules: RecordingRules,
        sink: RecordingSink,
        *,
        stabilization_s: float = 2.0,
        process_existing: bool = False,
        rescan_interval_s: float = 60.0,
        root_check_interval_s: float = 5.0,
        unfinished_grace_s: float = 300.0,
        retry_delay_s: float = 5.0,
    ) -> None:
        self.roots = tuple(Path(p).expanduser().absolute() for p in watch_paths)
        self.rules = rules
        self._sink = sink
        self._stabilization_s = stabilization_s
        self._recheck_s = max(stabilization_s, MIN_RECHECK_S)
        self._process_existing = process_existing
        self._rescan_s = rescan_interval_s
        self._root_check_s = root_check_interval_s
        self._grace_s = unfinished_grace_s
        self._retry_s = retry_delay_s
        self._present: dict[Path, Path] = {}  # watch path → its real path, for those that exist
        self._reported_missing: set[Path] = set()
        self._candidates: dict[Path, _Candidate] = {}
        self._judged: dict[Path, FileSig] = {}  # real path → the signature already stored/refused
        self._dirty: set[Path] = set()
        self._wake = asyncio.Event()
        self._roots_changed = asyncio.Event()
        self._stop_watch: asyncio.Event | None = None
        self._started = False
        self._sink_failing = False

    @classmethod
    def from_settings(cls, settings: Settings, sink: RecordingSink, **options: Any) -> RecordingWatcher:
        """Build a watcher from the RECORDING_* settings (options: intervals, grace)."""
        return cls(
            settings.recording_watch_paths,
            RecordingRules.from_settings(settings),
            sink,
            stabilization_s=settings.recording_stabilization_time,
            process_existing=settings.recording_process_existing,
            **options,
        )

    @property
    def pending(self) -> int:
        """Files seen but not yet judged (still changing, or waiting out the stabilization)."""
        return len(self._candidates)

    # -- the loops ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Watch until cancelled."""
        await self.start()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._watch_loop(), name="recordings-watch")
            tasks.create_task(self._process_loop(), name="recordings-process")

    async def _process_loop(self) -> None:
        next_roots = time.monotonic() + self._root_check_s
        # The watch is armed a moment after the first scan: a file finished in between would wait
        # for the periodic rescan, so rescan once shortly after start.
        next_rescan = time.monotonic() + min(self._rescan_s, FIRST_RESCAN_S)
        while True:
            self._wake.clear()
            await self.run_once()
            now = time.monotonic()
            if now >= next_roots:
                await self.refresh_roots()
                next_roots = now + self._root_check_s
            if now >= next_rescan:
                await self.scan()
                next_rescan = now + self._rescan_s
            deadline = min([next_roots, next_rescan, *(c.due_at for c in self._candidates.values())])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await self._wake.wait()

    async def _watch_loop(self) -> None:
        # Imported here, not at the top: a `connector run` without the watcher (the default) never
        # loads watchfiles, its Rust extension and the multiprocessing modules it pulls in (~1.5 MB).
        from watchfiles import awatch

        while True:
            self._roots_changed.clear()
            roots = tuple(self._present)
            if not roots:
                await self._roots_changed.wait()
                continue
            stop = self._stop_watch = asyncio.Event()
            try:
                async for changes in awatch(
                    *roots, watch_filter=None, stop_event=stop, ignore_permission_denied=True
                ):
                    self._dirty.update(Path(raw) for _change, raw in changes)
                    self._wake.set()
            except (OSError, RuntimeError) as error:
                # E.g. a path removed just now, or the inotify watch limit: rescans still run.
                log.warning(
                    "cannot watch %s for changes (%s); relying on rescans every %g s",
                    ", ".join(map(str, roots)),
                    error,
                    self._rescan_s,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._rescan_s):
                        await self._roots_changed.wait()

    # -- the steps (each usable on its own: tests drive these instead of the loops) -----------

    async def start(self) -> None:
        """Find the watch paths and take stock of the files already there."""
        if self._started:
            return
        self._started = True
        await self.check_roots()
        sightings = await self._walk(list(self._present))
        # Logged once the files already there are taken stock of: from here on, a new file is new.
        log.info(
            "watching %s for recordings (%s)",
            ", ".join(map(str, self.roots)) or "nothing",
            "existing files included" if self._process_existing else "new files only",
        )
        if self._process_existing:
            self._note_all(sightings)
            return
        for sighting in sightings:
            self._judged[sighting.path] = sighting.sig  # left alone until they change
        if sightings:
            log.info("%d existing files left alone (RECORDING_PROCESS_EXISTING=false)", len(sightings))

    async def scan(self) -> None:
        """Look at every file under the watch paths: catches what the events missed."""
        self._forget_old()
        self._note_all(await self._walk(list(self._present)))

    async def refresh_roots(self) -> None:
        """Notice watch paths that appeared or vanished; take in the files of new ones."""
        appeared = await self.check_roots()
        if appeared:
            self._note_all(await self._walk(appeared))

    async def check_roots(self) -> list[Path]:
        """Update which watch paths exist (each missing one reported once); return the new ones."""
        present = await asyncio.to_thread(existing_roots, self.roots)
        appeared = [root for root in present if root not in self._present]
        vanished = [root for root in self._present if root not in present]
        for root in self.roots:
            if root not in present and root not in self._reported_missing:
                self._reported_missing.add(root)
                log.warning(
                    "watch path %s %s; it will be watched once it appears",
                    root,
                    "has disappeared" if root in vanished else "does not exist",
                )
            elif root in appeared and root in self._reported_missing:
                self._reported_missing.discard(root)
                log.info("watch path %s appeared; watching it", root)
        self._present = present
        if appeared or vanished:
            self._roots_changed.set()
            if self._stop_watch is not None:
                self._stop_watch.set()
        return appeared

    async def run_once(self) -> int:
        """Take in changed paths, judge the candidates that are due, store the accepted ones.

        Return how many recordings the sink stored as new.
        """
        if self._dirty:
            paths, self._dirty = self._dirty, set()
            sightings = await asyncio.to_thread(
                sight_paths, paths, self.rules, self._real_roots(), self._cutoff()
            )
            self._note_all(sightings)
        now = time.monotonic()
        due = [(path, c.sig) for path, c in self._candidates.items() if c.due_at <= now]
        if not due:
            return 0
        results = await asyncio.to_thread(judge_all, due, self.rules, time.time())
        return await self._store(self._settle(results, time.monotonic()))

    # -- bookkeeping ---------------------------------------------------------------------------

    def _real_roots(self) -> tuple[Path, ...]:
        return tuple(self._present.values())

    def _cutoff(self) -> float:
        """Files last modified before this (epoch seconds) are too old to consider."""
        return time.time() - self.rules.max_age_s

    async def _walk(self, tops: Sequence[Path]) -> list[Sighting]:
        """Walk watch paths (from their real folders: plain files then need no resolving)."""
        real_tops = [self._present[top] for top in tops if top in self._present]
        roots, cutoff = self._real_roots(), self._cutoff()

        def walk_all() -> list[Sighting]:
            return [s for top in real_tops for s in walk_tree(top, self.rules, roots, cutoff)]

        return await asyncio.to_thread(walk_all)

    def _note_all(self, sightings: Iterable[Sighting]) -> None:
        now = time.monotonic()
        for sighting in sightings:
            self._note(sighting, now)

    def _note(self, sighting: Sighting, now: float) -> None:
        """Track a sighting: a new signature starts (or restarts) the stabilization clock."""
        path, sig = sighting.path, sighting.sig
        if self._judged.get(path) == sig:
            return
        if not sighting.inside:
            self._judged[path] = sig
            log.warning(
                "refusing %r: it leads to %r, outside RECORDING_WATCH_PATHS",
                str(sighting.found),
                str(path),
            )
            return
        current = self._candidates.get(path)
        if current is None or current.sig != sig:
            due_at = now + self._stabilization_s
            self._candidates[path] = _Candidate(sighting.found, sig, now, due_at)

    def _settle(self, results: Iterable[tuple[Path, Judgement]], now: float) -> list[tuple[Path, _Candidate]]:
        """Apply judgements to the candidates; return the accepted ones."""
        accepted: list[tuple[Path, _Candidate]] = []
        for path, result in results:
            candidate = self._candidates.get(path)
            if candidate is None:
                continue
            if result is None:
                del self._candidates[path]
            elif isinstance(result, FileSig):
                self._candidates[path] = _Candidate(candidate.found, result, now, now + self._recheck_s)
            elif result.outcome is Outcome.REJECT:
                self._settled(path, candidate)
                log.info("not uploading %r: %s", str(path), result.reason)
            elif result.outcome is Outcome.UNFINISHED and now - candidate.since < self._grace_s:
                # Unchanged since: an event or a rescan restarts the clock when it is written to.
                candidate.due_at = candidate.since + self._grace_s
            else:
                if result.outcome is Outcome.UNFINISHED:
                    log.warning(
                        "%r: %s after %.0f s without change; taking it as finished",
                        str(path),
                        result.reason,
                        now - candidate.since,
                    )
                accepted.append((path, candidate))
        return accepted

    def _settled(self, path: Path, candidate: _Candidate) -> None:
        self._candidates.pop(path, None)
        self._judged[path] = candidate.sig

    def _forget_old(self) -> None:
        """Drop judged signatures too old to be seen again (scans skip such files)."""
        horizon = self._cutoff() - FORGET_MARGIN_S
        self._judged = {p: s for p, s in self._judged.items() if s.mtime >= horizon}

    async def _store(self, accepted: Sequence[tuple[Path, _Candidate]]) -> int:
        """Hand accepted files to the sink; on an outbox error keep them and retry later."""
        if not accepted:
            return 0
        detected_at = utc_now()
        records = [self._record(path, candidate, detected_at) for path, candidate in accepted]
        try:
            stored = await self._sink(records)
        except OutboxError as error:
            if not self._sink_failing:
                log.error(
                    "cannot store %d recordings in the outbox (%s); retrying every %g s",
                    len(records),
                    error,
                    self._retry_s,
                )
            self._sink_failing = True
            retry_at = time.monotonic() + self._retry_s
            for _path, candidate in accepted:
                candidate.due_at = retry_at
            return 0
        if self._sink_failing:
            log.info("recordings are being stored in the outbox again")
            self._sink_failing = False
        # Counted here, from what the sink reports as new: duplicates are not detections.
        RECORDINGS_DETECTED.inc(stored)
        for path, candidate in accepted:
            self._settled(path, candidate)
            log.info("recording %r (%d bytes) is ready to upload", str(path), candidate.sig.size)
        return stored

    @staticmethod
    def _record(path: Path, candidate: _Candidate, detected_at: str) -> NewRecording:
        uniqueid = uniqueid_from_name(path.name) or uniqueid_from_name(candidate.found.name)
        return NewRecording(
            path=str(path),
            size=candidate.sig.size,
            mtime=candidate.sig.mtime,
            detected_at=detected_at,
            uniqueid=uniqueid,
        )
