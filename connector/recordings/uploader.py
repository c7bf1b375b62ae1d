"""The recording uploader loop: take due recordings, link each to its call, stream it, settle its row.

What goes with a recording (form fields, call link, content type) and the deletion after a
delivered upload are pure pieces kept in connector.recordings.upload.

Taking: rows in flight are kept in memory (only one `connector run` owns the DATA_DIR) and left out
of the due read; taking writes nothing, so a row whose upload is abandoned (refused key, shutdown
deadline) simply stays pending and due, and a restart keeps every row's next_attempt_at.

Linking: the UniqueID the watcher found in the file name (row.uniqueid) is looked up among the
stored CDRs, with or without a `systemname-` prefix; a name without one is looked up in the CDRs'
RecordingFile header (FreePBX's CDR(recordingfile), mapped in cdr_manager's [mappings]), as the
file's base name or its full path. The call's first CDR gives uniqueid, linkedid, src and dst, and
all of the CDRs found the earliest calldate and the longest duration. A recording whose CDR is not
stored yet, found either way, waits for it, re-checking every few seconds without counting an
attempt, for up to RECORDING_CDR_WAIT_SECONDS after it was detected; then it goes without.

Uploading: one multipart request per file (connector.api.multipart), read from disk in chunks with
its sha256 computed on the way and sent after the file part; at most RECORDING_UPLOAD_CONCURRENCY
at once. The file is opened without following a symlink and must still have the size and mtime it
was detected with, else the row fails ("file vanished before upload", "file changed since it was
detected"). Answers settle the row as for CDRs: delivered → sent (with the sha256 of the bytes
sent); RetryLater → stays pending, rescheduled; Rejected → failed with the API's answer;
AuthRefused → no row changes state and the uploader pauses. With RECORDING_DELETE_AFTER_UPLOAD the
file is deleted after a delivered answer, only if it lies inside a watch path and is unchanged.
The API client reports a file that cannot be sent as it was detected as a FileProblem, whose
message is the row's last_error.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from connector import metrics
from connector.api.multipart import FileState, TrailingDigest
from connector.cdr.mapping import MappingOptions, mapping_options
from connector.config import Settings
from connector.drain.loop import SlotDrainer, wait_for_event
from connector.errors import AuthRefused, FileProblem, OutboxError, Rejected, RetryLater
from connector.outbox.records import Kind, RecordingRow
from connector.outbox.store import Store
from connector.recordings.upload import (
    CallLink,
    call_link,
    content_type_for,
    delete_uploaded,
    recording_fields,
    recording_file_names,
)
from connector.timeutil import age_seconds

log = logging.getLogger(__name__)

WAKE_MARGIN_S = 0.05  # wake a little after a row's due time, so the due read surely finds it due


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
    # A row whose outcome could not be recorded (or that met a bug) is kept out of the due reads
    # for this long, in memory, so that it is not uploaded again and again at once.
    hold_after_error_s: float = 600.0
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


class RecordingUploader(SlotDrainer[RecordingRow]):
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
        self._wake_times: list[float] = []  # monotonic times at which rows we put off come due
        super().__init__(
            "recording uploader",
            new_rows,
            concurrency=pace.concurrency,
            retry_base_s=pace.retry_base_s,
            retry_cap_s=pace.retry_cap_s,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, store: Store, api: RecordingSender, new_rows: asyncio.Event
    ) -> RecordingUploader:
        """Build the uploader from the settings; `new_rows` is set when the watcher stored recordings."""
        return cls(store, api, mapping_options(settings), UploadSettings.from_settings(settings), new_rows)

    @property
    def in_flight(self) -> frozenset[int]:
        """Ids of the rows taken and not settled yet (or held back after an error)."""
        return frozenset(self._in_flight)

    async def run_once(self) -> int:
        """Handle whatever is due now (up to the concurrency), without pacing; return rows handled."""
        rows = await self._take(self._pace.concurrency)
        try:
            async with asyncio.TaskGroup() as uploads:
                for row in rows:
                    uploads.create_task(self.deliver(row))
        finally:
            self._in_flight.difference_update(row.id for row in rows)
        return len(rows)

    async def _take(self, limit: int) -> list[RecordingRow]:
        """The oldest due recordings not already in flight, now in flight."""
        rows = await self._store.due_recordings(limit, self._in_flight)
        self._in_flight.update(row.id for row in rows)
        return rows

    async def _take_next(self) -> RecordingRow | None:
        """Take the oldest due recording not already being uploaded; wait while there is none."""
        while not self._stopping.is_set():
            self._new_rows.clear()
            taken = await self._take(1)
            if taken:
                return taken[0]
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
        held = False
        try:
            await self.deliver(row)
        except OutboxError as error:
            # The row stays pending; held back a while, it is tried again later.
            log.error("recording uploader: cannot record the outcome of recording #%d: %s", row.id, error)
            held = True
        except Exception:
            # A bug or an unforeseen error must not stop the other uploads; the row stays pending
            # and, held back a while, is tried again later.
            log.exception("recording uploader: unexpected error uploading recording #%d %r", row.id, row.path)
            held = True
        finally:
            if held:
                self._hold_back(row.id)
            else:
                self._in_flight.discard(row.id)
            self._slots.release()

    def _hold_back(self, row_id: int) -> None:
        """Keep a row out of the due reads for hold_after_error_s (in memory: a restart frees it)."""
        delay = self._pace.hold_after_error_s
        asyncio.get_running_loop().call_later(delay, self._in_flight.discard, row_id)
        self._due_in(delay)

    async def deliver(self, row: RecordingRow) -> None:
        """Link a taken recording to its call (or put it off), upload it, and settle its row.

        Cancelled at the shutdown deadline, the row simply stays pending and due for the next start.
        """
        link = await self._link(row)
        if link is None and await self._waiting_for_cdr(row):
            return
        await self._upload(row, link)

    async def _link(self, row: RecordingRow) -> CallLink | None:
        if row.uniqueid:
            cdrs = await self._store.cdrs_of_channel(row.uniqueid)
        else:
            cdrs = await self._store.cdrs_by_recording_file(recording_file_names(row.path))
        return call_link(cdrs, self._options)

    async def _waiting_for_cdr(self, row: RecordingRow) -> bool:
        """Put the row off while its CDR may still come; False once the wait is over."""
        remaining = self._pace.cdr_wait_s - age_seconds(row.detected_at)
        if remaining <= 0:
            if self._pace.cdr_wait_s > 0:
                looked_for = f"UniqueID {row.uniqueid}" if row.uniqueid else "a RecordingFile naming it"
                log.info(
                    "recording #%d %r: no CDR with %s after %g s; uploading without call details",
                    row.id,
                    row.path,
                    looked_for,
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
            # The row stays pending and due, exactly as it is; taken again once the gate reopens.
            self.gate.auth_refused(error.detail)
        except Rejected as error:
            await self._fail(row, error.detail, "rejected by the API")
        except FileProblem as error:
            await self._fail(row, str(error), "not uploaded")
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
