"""`connector run`: wire the listener, the outbox, the drainers and the monitoring endpoints.

Shutdown on SIGTERM/SIGINT, in pipeline order: stop reading AMI, flush every CDR already read to
disk, let in-flight deliveries finish by a deadline (an abandoned one leaves its row pending, due),
close the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import signal
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from connector import __version__
from connector.ami.client import AmiClient
from connector.ami.ingest import CdrWriter
from connector.api.client import ApiClient
from connector.backfill.follower import CsvFollower
from connector.cdr.filters import filter_rules
from connector.cdr.mapping import mapping_options
from connector.config import Settings
from connector.drain.cdrs import CdrDrainer, DrainSettings
from connector.errors import OutboxCorrupt, OutboxError, StartupError
from connector.health import Probe, start_monitoring
from connector.metrics import OUTBOX_QUARANTINED
from connector.outbox.lock import DataDirLock
from connector.outbox.notify import NotifyingSink
from connector.outbox.quarantine import move_aside, quarantined_files
from connector.outbox.retention import RetentionPass, RetentionSettings
from connector.outbox.store import Store
from connector.recordings.uploader import RecordingUploader
from connector.recordings.watcher import RecordingWatcher
from connector.stats import refresh, summary_line

log = logging.getLogger("connector")

# Each /metrics scrape refreshes the gauges too; counting a large outbox is not free (0.5 s at 1M rows).
STATS_REFRESH_S = 30.0
STATS_LOG_S = 300.0
# Everything that was read is committed and in-flight requests finish within this; Docker's stop
# grace period (deploy/docker-compose.yml) is longer.
SHUTDOWN_DEADLINE_S = 20.0


async def _periodic(every_s: float, work: Callable[[], Awaitable[object]], what: str) -> None:
    """Run `work` every `every_s` seconds; log failures without stopping."""
    while True:
        try:
            await work()
        except OutboxError as error:
            log.warning("%s failed: %s", what, error)
        except Exception:
            log.exception("%s failed", what)
        await asyncio.sleep(every_s)


@dataclass
class _Part:
    """One long-running task of the service and how to ask it to stop."""

    name: str
    run: Callable[[], Coroutine[Any, Any, None]]
    request_stop: Callable[[], object] | None  # None: cancel it
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.run(), name=self.name)

    async def finish(self, deadline: float) -> None:
        """Ask the task to stop and wait for it until `deadline` (loop time); cancel it after."""
        assert self.task is not None
        if self.request_stop is None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            return
        requested = self.request_stop()
        if inspect.isawaitable(requested):
            await requested
        remaining = max(0.1, deadline - asyncio.get_running_loop().time())
        try:
            await asyncio.wait_for(asyncio.shield(self.task), remaining)
        except TimeoutError:
            log.warning("%s did not stop in time; cancelling it", self.name)
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class Connector:
    """The running service: its parts and their order of start and stop."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.new_rows = asyncio.Event()
        self.writer = CdrWriter(NotifyingSink(store, self.new_rows))
        self.follower = CsvFollower.from_settings(settings, NotifyingSink(store, self.new_rows))
        self.db_follower: DbFollower | None = None
        if settings.cdr_backfill_db_url.get_secret_value():
            # Imported only when used: it loads SQLAlchemy, which `run` otherwise never needs.
            from connector.backfill.db_follower import DbFollower

            self.db_follower = DbFollower.from_settings(settings, NotifyingSink(store, self.new_rows))
        password = settings.ami_password.get_secret_value() if settings.ami_password else ""
        # gate: when Cdr frames arrive faster than the outbox commits them (and commits succeed),
        # reading pauses briefly and the kernel's socket buffers hold the rest; see CdrWriter.
        self.ami = AmiClient(
            settings.ami_host,
            settings.ami_port,
            settings.ami_username,
            password,
            self.writer.on_cdr,
            tls=settings.ami_tls_context,
            tls_ca_file=settings.ami_tls_ca_file,
            gate=self.writer,
        )
        self.api = ApiClient.from_settings(settings)
        self.new_recordings = asyncio.Event()
        self.uploader = RecordingUploader.from_settings(settings, store, self.api, self.new_recordings)
        recordings_sink = NotifyingSink(store, self.new_recordings)
        self.watcher = RecordingWatcher.from_settings(settings, recordings_sink.append_recordings)
        self.drainer = CdrDrainer(
            store,
            self.api,
            filter_rules(settings),
            mapping_options(settings),
            DrainSettings.from_settings(settings),
            self.new_rows,
        )
        self.retention = RetentionPass(store, RetentionSettings.from_settings(settings))

    def healthy(self) -> tuple[bool, str]:
        """Alive and able to write the outbox."""
        if not self.writer.outbox_writable:
            return False, "the outbox is not writable"
        return True, "outbox writable"

    def ready(self) -> tuple[bool, str]:
        """Healthy and logged in to AMI."""
        healthy, detail = self.healthy()
        if not healthy:
            return healthy, detail
        if not self.ami.connected:
            return False, "no AMI session"
        return True, "AMI session up, outbox writable"

    async def _refresh_stats(self) -> None:
        await refresh(self.store)

    async def _log_stats(self) -> None:
        log.info("stats: %s", summary_line(await self.store.stats()))

    async def _start_monitoring(self) -> asyncio.Server:
        host, port = self.settings.monitoring_host, self.settings.monitoring_port
        try:
            return await start_monitoring(host, port, Probe(self.healthy, self.ready, self._refresh_stats))
        except OSError as error:
            raise StartupError(
                f"cannot listen on MONITORING_HOST:MONITORING_PORT {host}:{port} ({error.strerror}): "
                "choose another MONITORING_PORT or set MONITORING_ENABLED=false"
            ) from None

    def _parts(self) -> list[_Part]:
        """The long-running parts, in the order they stop: the reader first, the senders last."""
        parts = [
            _Part("ami", self.ami.run, self.ami.aclose),
            _Part("writer", self.writer.run, lambda: self.writer.stop(SHUTDOWN_DEADLINE_S)),
        ]
        if self.follower is not None:
            parts.append(_Part("csv follower", self.follower.run, self.follower.stop))
        if self.db_follower is not None:
            parts.append(_Part("database follower", self.db_follower.run, self.db_follower.stop))
        if self.settings.recording_watcher_enabled:
            # What the watcher found is committed already; anything else is found again next start.
            parts.append(_Part("recording watcher", self.watcher.run, None))
            parts.append(_Part("recording uploader", self.uploader.run, self.uploader.stop))
        parts.append(_Part("cdr drainer", self.drainer.run, self.drainer.stop))
        return parts

    async def serve(self, stop: asyncio.Event) -> int:
        """Run every part until `stop` is set, then shut down in order; return the exit code.

        A part that dies on its own (a bug) stops the service with exit code 1, so that the
        container restarts rather than running on half-dead; nothing stored is lost by that.
        """
        monitoring = None
        if self.settings.monitoring_enabled:
            monitoring = await self._start_monitoring()
        background = [
            asyncio.create_task(_periodic(STATS_REFRESH_S, self._refresh_stats, "stats refresh")),
            asyncio.create_task(_periodic(STATS_LOG_S, self._log_stats, "stats log")),
            asyncio.create_task(
                _periodic(self.retention.settings.interval_s, self.retention.run_once, "retention pass")
            ),
        ]
        parts = self._parts()
        for part in parts:
            part.start()
        exit_code = 1
        try:
            exit_code = await _until_stopped(stop, parts)
        finally:
            log.info("stopping: no more AMI reads; flushing and finishing deliveries")
            deadline = asyncio.get_running_loop().time() + SHUTDOWN_DEADLINE_S
            for part in parts:
                await part.finish(deadline)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if monitoring is not None:
                monitoring.close()
                await monitoring.wait_closed()
            await self.api.aclose()
            log.info("CDR monitor stopped: %s", summary_line(await self.store.stats()))
        return exit_code


async def _until_stopped(stop: asyncio.Event, parts: Sequence[_Part]) -> int:
    """Wait for `stop`, or for a part to die on its own; return the exit code."""
    stopping = asyncio.create_task(stop.wait())
    running = {part.task for part in parts if part.task is not None}
    done, _ = await asyncio.wait({stopping, *running}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    crashed = done - {stopping}
    for task in crashed:
        error = None if task.cancelled() else task.exception()
        log.error("%s stopped unexpectedly (%r); shutting down", task.get_name(), error, exc_info=error)
    return 1 if crashed else 0


# Every CDR allocates a few dozen container objects that die young; the default threshold (700)
# ran a collection every ~20 CDRs and cost ~20 µs per CDR under load (bench/pipeline_bench.py).
GC_YOUNG_THRESHOLD = 5000


def _tune_garbage_collector() -> None:
    """Collect less often, and never again scan what start-up created (modules, settings, parts)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def run_connector(settings: Settings) -> int:
    """Run the connector until SIGTERM/SIGINT; return the exit code."""
    # The lock first: a second `connector run` must not even migrate the outbox of the first.
    lock = DataDirLock(settings.data_dir)
    lock.acquire()
    path = settings.outbox_path
    try:
        if earlier := quarantined_files(path):
            log.warning(
                "DATA_DIR holds damaged outbox files moved aside at earlier starts: %s; "
                "`connector salvage FILE` recovers their rows; delete each one once salvaged",
                ", ".join(str(file) for file in earlier),
            )
        try:
            store = await Store.open(path)
        except OutboxCorrupt as error:
            # A damaged outbox must not stop collection: keep it intact for salvage, start afresh.
            moved = await asyncio.to_thread(move_aside, path)
            OUTBOX_QUARANTINED.inc()
            log.error(
                "outbox %s %s: moved it aside to %s%s and started a fresh outbox; "
                "rows not yet delivered are in that file: `connector salvage %s` recovers them",
                path,
                error.problem,
                moved.database,
                f" (with {', '.join(file.name for file in moved.companions)})" if moved.companions else "",
                moved.database,
            )
            store = await Store.open(path)
    except BaseException:
        lock.release()
        raise
    try:
        log.info("connector %s starting with %s", __version__, settings.redacted())
        if settings.ami_tls and not settings.ami_tls_verify:
            log.warning(
                "AMI_TLS_VERIFY=false: AMI's certificate and name are not checked, so whoever sits "
                "between here and %s can read the AMI password and every CDR; set AMI_TLS_CA_FILE instead",
                settings.ami_host,
            )
        stop = asyncio.Event()
        _install_signal_handlers(stop)
        connector = Connector(settings, store)
        _tune_garbage_collector()
        return await connector.serve(stop)
    finally:
        await store.close()
        lock.release()
