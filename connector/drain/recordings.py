"""The recording uploader: claim due recordings, link each to its call, stream it, settle its row.

Linking: the UniqueID the watcher found in the file name (row.uniqueid) is looked up among the
stored CDRs, with or without a `systemname-` prefix; the call's first CDR gives uniqueid, linkedid,
src and dst, and all of the channel's CDRs the earliest calldate and the longest duration. A
recording whose CDR is not stored yet waits for it, re-checking every few seconds without counting
an attempt, for up to RECORDING_CDR_WAIT_SECONDS after it was detected; then it goes without.

Uploading: one multipart request per file (connector.api.multipart), read from disk in chunks with
its sha256 computed on the way and sent after the file part; at most RECORDING_UPLOAD_CONCURRENCY
at once. The file is opened without following a symlink and must still have the size and mtime it
was detected with, else the row fails ("file vanished before upload", "file changed since it was
detected"). Answers settle the row as for CDRs: delivered → sent (with the sha256 of the bytes
sent); RetryLater → stays pending, rescheduled; Rejected → failed with the API's answer;
AuthRefused → no row changes state and the uploader pauses. With RECORDING_DELETE_AFTER_UPLOAD the
file is deleted after a delivered answer, only if it lies inside a watch path and is unchanged.
"""

from __future__ import annotations

import asyncio
import errno
import heapq
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from connector import metrics
from connector.api.multipart import FileChanged, FileState, TrailingDigest
from connector.cdr.mapping import MappingOptions, mapping_options
from connector.config import Settings
from connector.drain.gate import DeliveryGate
from connector.drain.loop import run_slots, wait_for_event
from connector.errors import AuthRefused, OutboxError, Rejected, RetryLater
from connector.outbox.records import Kind, NewRecording, RecordingRow
from connector.outbox.store import Store
from connector.recordings.upload import (
    CallLink,
    call_link,
    content_type_for,
    delete_uploaded,
    recording_fields,
)
from connector.timeutil import age_seconds

if TYPE_CHECKING:
    from connector.recordings.watcher import RecordingSink

log = logging.getLogger(__name__)

WAKE_MARGIN_S = 0.05  # wake a little after a row's due time, so the claim surely finds it due
VANISHED = "file vanished before upload"


class RecordingSender(Protocol):
    """What the uploader needs of the API client."""

    async def upload_recording(
        self,
        path: Path,
        fields: Mapping[str, str],
        content_type: str,
        *,
        expected: FileState | None = None,
        digest: TrailingDigest | None = None,
    ) -> int: ...


@dataclass(frozen=True)
class UploadSettings:
    """How the recording uploader paces itself."""

    concurrency: int = 2
    cdr_wait_s: float = 60.0
    cdr_recheck_s: float = 5.0
    idle_poll_s: float = 30.0
    lease_s: float = 600.0  # a longer upload keeps its row: claims skip rows in flight
    retry_base_s: float = 1.0
    retry_cap_s: float = 300.0
    delete_after_upload: bool = False
    watch_paths: tuple[Path, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadSettings:
        """Take RECORDING_UPLOAD_CONCURRENCY, …_CDR_WAIT_SECONDS, …_DELETE_AFTER_UPLOAD, …_WATCH_PATHS."""
        return cls(
            concurrency=settings.recording_upload_concurrency,
            cdr_wait_s=settings.recording_cdr_wait_seconds,
            delete_after_upload=settings.recording_delete_after_upload,
            watch_paths=tuple(Path(p).expanduser().absolute() for p in settings.recording_watch_paths),
        )


def file_problem(error: OSError) -> str:
    """Why a file could not be uploaded, in words for the row's last_error."""
    if isinstance(error, FileChanged):
        return str(error)
    if isinstance(error, FileNotFoundError):
        return VANISHED
    if error.errno == errno.ELOOP:
        return "the file was replaced by a symbolic link; not following it"
    return f"cannot read the file: {error.strerror or error}"


def notifying_sink(store: Store, new_rows: asyncio.Event) -> RecordingSink:
    """The watcher's sink: append recordings, then wake the uploader if any was new."""

    async def append(rows: Sequence[NewRecording]) -> int:
        new = await store.append_recordings(rows)
        if new:
            new_rows.set()
        return new

    return append


class RecordingUploader:
    """Uploads pending recordings until stopped."""

    def __init__(
        self,
        store: Store,
        api: RecordingSender,
        options: MappingOptions,
        pace: UploadSettings,
        new_rows: asyncio.Event,
    ) -> None:
        self._store = store
        self._api = api
        self._options = options
        self._pace = pace
        self._new_rows = new_rows
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(pace.concurrency)
        self._in_flight: set[int] = set()
        self._wake_times: list[float] = []  # monotonic times at which rows we put off come due
        self.gate = DeliveryGate(
            "recording uploader", self._stopping, base_s=pace.retry_base_s, cap_s=pace.retry_cap_s
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, store: Store, api: RecordingSender, new_rows: asyncio.Event
    ) -> RecordingUploader:
        """Build the uploader from the settings; `new_rows` is set when the watcher stored recordings."""
        return cls(store, api, mapping_options(settings), UploadSettings.from_settings(settings), new_rows)

    def stop(self) -> None:
        """Stop claiming; uploads in flight finish (the caller bounds them with a deadline)."""
        self._stopping.set()
        self._new_rows.set()

    async def run(self) -> None:
        """Claim and upload until stop() is called."""
        await run_slots(
            "recording uploader",
            stopping=self._stopping,
            gate=self.gate,
            slots=self._slots,
            take=self._next_row,
            deliver=self._deliver_in_slot,
        )

    async def run_once(self) -> int:
        """Handle whatever is due now (up to the concurrency), without pacing; return rows handled."""
        rows = await self._store.claim_recordings(self._pace.concurrency, self._pace.lease_s)
        async with asyncio.TaskGroup() as uploads:
            for row in rows:
                uploads.create_task(self.deliver(row))
        return len(rows)

    async def _next_row(self) -> RecordingRow | None:
        """Claim the oldest due recording not already being uploaded; wait while there is none."""
        while not self._stopping.is_set():
            self._new_rows.clear()
            claimed = await self._store.claim_recordings(1, self._pace.lease_s)
            if claimed and claimed[0].id not in self._in_flight:
                self._in_flight.add(claimed[0].id)
                return claimed[0]
            if claimed:
                continue  # its claim ran out mid-upload; claiming again just extended it
            await wait_for_event(self._new_rows, self._idle_timeout())
        return None

    def _idle_timeout(self) -> float:
        """Sleep until the next row we put off comes due, or the idle poll."""
        now = time.monotonic()
        while self._wake_times and self._wake_times[0] <= now:
            heapq.heappop(self._wake_times)
        if not self._wake_times:
            return self._pace.idle_poll_s
        return min(self._pace.idle_poll_s, self._wake_times[0] - now)

    def _due_in(self, delay_s: float) -> None:
        heapq.heappush(self._wake_times, time.monotonic() + delay_s + WAKE_MARGIN_S)

    async def _deliver_in_slot(self, row: RecordingRow) -> None:
        try:
            await self.deliver(row)
        except OutboxError as error:
            # The row stays pending under its claim and is retried once it expires.
            log.error("recording uploader: cannot record the outcome of recording #%d: %s", row.id, error)
        except Exception:
            # A bug or an unforeseen error must not stop the other uploads; the row stays pending
            # under its claim and is tried again once the claim expires.
            log.exception("recording uploader: unexpected error uploading recording #%d %r", row.id, row.path)
        finally:
            self._in_flight.discard(row.id)
            self._slots.release()

    async def deliver(self, row: RecordingRow) -> None:
        """Link a claimed recording to its call (or put it off), upload it, and settle its row."""
        try:
            link = await self._link(row)
            if link is None and await self._waiting_for_cdr(row):
                return
            await self._upload(row, link)
        except asyncio.CancelledError:
            # Shutdown deadline: make the row due again at once for the next start.
            await asyncio.shield(self._store.release(Kind.RECORDING, [row.id]))
            raise

    async def _link(self, row: RecordingRow) -> CallLink | None:
        if not row.uniqueid:
            return None
        return call_link(await self._store.cdrs_of_channel(row.uniqueid), self._options)

    async def _waiting_for_cdr(self, row: RecordingRow) -> bool:
        """Put the row off while its CDR may still come; False once the wait is over."""
        remaining = self._pace.cdr_wait_s - age_seconds(row.detected_at)
        if remaining <= 0:
            if self._pace.cdr_wait_s > 0:
                log.info(
                    "recording #%d: no CDR with UniqueID %s after %g s; uploading without call details",
                    row.id,
                    row.uniqueid,
                    self._pace.cdr_wait_s,
                )
            return False
        delay = min(self._pace.cdr_recheck_s, remaining)
        await asyncio.shield(self._store.defer(Kind.RECORDING, [row.id], delay))
        self._due_in(delay)
        return True

    async def _upload(self, row: RecordingRow, link: CallLink | None) -> None:
        path = Path(row.path)
        digest = TrailingDigest()
        try:
            size = await self._api.upload_recording(
                path,
                recording_fields(row, link),
                content_type_for(path),
                expected=FileState(row.size, row.mtime),
                digest=digest,
            )
        except RetryLater as error:
            delay = self.gate.retry_later(error.detail, error.retry_after_s)
            await asyncio.shield(self._store.reschedule(Kind.RECORDING, [row.id], delay, error.detail))
            self._due_in(delay)
        except AuthRefused as error:
            self.gate.auth_refused(error.detail, error.status)
            await asyncio.shield(self._store.release(Kind.RECORDING, [row.id]))
        except Rejected as error:
            await self._fail(row, error.detail, "rejected by the API")
        except OSError as error:
            await self._fail(row, file_problem(error), "not uploaded")
        else:
            self.gate.delivered()
            await self._delivered(row, size, digest.hexdigest, link)

    async def _fail(self, row: RecordingRow, reason: str, what: str) -> None:
        await asyncio.shield(self._store.mark_failed(Kind.RECORDING, {row.id: reason}))
        metrics.RECORDINGS_FAILED.inc()
        log.error("recording #%d %r %s: %s; `connector resend` retries it", row.id, row.path, what, reason)

    async def _delivered(self, row: RecordingRow, size: int, sha256: str, link: CallLink | None) -> None:
        await asyncio.shield(self._store.mark_recording_sent(row.id, sha256))
        metrics.RECORDINGS_UPLOADED.inc()
        metrics.RECORDING_UPLOAD_BYTES.inc(size)
        log.info(
            "uploaded recording #%d %r (%d bytes, %s)",
            row.id,
            row.path,
            size,
            f"call {link.uniqueid}" if link else "no CDR linked",
        )
        if self._pace.delete_after_upload:
            await self._delete(row)

    async def _delete(self, row: RecordingRow) -> None:
        refusal = await asyncio.to_thread(delete_uploaded, row, self._pace.watch_paths)
        if refusal is not None:
            log.warning("not deleting uploaded recording %r: %s", row.path, refusal)
            return
        await asyncio.shield(self._store.mark_deleted([row.id]))
        log.info("deleted uploaded recording %r", row.path)
