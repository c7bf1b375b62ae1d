"""`connector run`: wire the listener, the outbox, the drainers and the monitoring endpoints.

Shutdown on SIGTERM/SIGINT, in pipeline order: stop reading AMI, flush every CDR already read to
disk, let in-flight deliveries finish (or release their rows) by a deadline, close the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence

from connector import __version__
from connector.ami.client import AmiClient
from connector.ami.listener import CdrWriter
from connector.api.client import ApiClient
from connector.backfill.follower import CsvFollower
from connector.cdr.filters import filter_rules
from connector.cdr.mapping import mapping_options
from connector.config import Settings
from connector.drain.cdrs import CdrDrainer, DrainSettings
from connector.errors import OutboxError, StartupError
from connector.health import Probe, start_monitoring
from connector.outbox.lock import DataDirLock
from connector.outbox.records import Kind, NewCdr
from connector.outbox.store import Store
from connector.stats import refresh, summary_line

log = logging.getLogger("connector")

STATS_REFRESH_S = 5.0
STATS_LOG_S = 300.0
SHUTDOWN_DEADLINE_S = 10.0


class NotifyingSink:
    """The listener's view of the store: append, then wake the drainer if anything was new."""

    def __init__(self, store: Store, new_rows: asyncio.Event) -> None:
        self._store = store
        self._new_rows = new_rows

    async def append_cdrs(self, rows: Sequence[NewCdr]) -> int:
        """Append and signal new rows."""
        new = await self._store.append_cdrs(rows)
        if new:
            self._new_rows.set()
        return new


async def _periodic(every_s: float, work: Callable[[], Awaitable[object]], what: str) -> None:
    """Run `work` every `every_s` seconds; log failures without stopping."""
    while True:
        try:
            await work()
        except OutboxError as error:
            log.warning("%s failed: %s", what, error)
        await asyncio.sleep(every_s)


async def _stop_task(task: asyncio.Task[None], deadline_s: float) -> None:
    """Wait for a task that was asked to stop; cancel it past the deadline."""
    try:
        await asyncio.wait_for(asyncio.shield(task), deadline_s)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Connector:
    """The running service: its parts and their order of start and stop."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.new_rows = asyncio.Event()
        self.writer = CdrWriter(NotifyingSink(store, self.new_rows))
        self.follower = CsvFollower.from_settings(settings, store, self.new_rows)
        password = settings.ami_password.get_secret_value() if settings.ami_password else ""
        # gate: when Cdr frames arrive faster than the outbox commits them (and commits succeed),
        # reading pauses briefly and the kernel's socket buffers hold the rest; see CdrWriter.
        self.ami = AmiClient(
            settings.ami_host,
            settings.ami_port,
            settings.ami_username,
            password,
            self.writer.on_cdr,
            gate=self.writer,
        )
        self.api = ApiClient.from_settings(settings)
        self.drainer = CdrDrainer(
            store,
            self.api,
            filter_rules(settings),
            mapping_options(settings),
            DrainSettings.from_settings(settings),
            self.new_rows,
        )

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

    async def serve(self, stop: asyncio.Event) -> None:
        """Run every part until `stop` is set, then shut down in order."""
        await self.store.release_all(Kind.CDR)
        monitoring = None
        if self.settings.monitoring_enabled:
            probe = Probe(self.healthy, self.ready, self._refresh_stats)
            monitoring = await start_monitoring(
                self.settings.monitoring_host, self.settings.monitoring_port, probe
            )
        background = [
            asyncio.create_task(_periodic(STATS_REFRESH_S, self._refresh_stats, "stats refresh")),
            asyncio.create_task(_periodic(STATS_LOG_S, self._log_stats, "stats log")),
        ]
        ami_task = asyncio.create_task(self.ami.run(), name="ami")
        writer_task = asyncio.create_task(self.writer.run(), name="writer")
        drainer_task = asyncio.create_task(self.drainer.run(), name="cdr drainer")
        follower_task = (
            asyncio.create_task(self.follower.run(), name="csv follower") if self.follower else None
        )
        try:
            await stop.wait()
        finally:
            log.info("stopping: no more AMI reads; flushing and finishing deliveries")
            await self.ami.aclose()
            await _stop_task(ami_task, 2.0)
            self.writer.stop(SHUTDOWN_DEADLINE_S)
            await _stop_task(writer_task, SHUTDOWN_DEADLINE_S + 1)
            if self.follower is not None and follower_task is not None:
                self.follower.stop()
                await _stop_task(follower_task, SHUTDOWN_DEADLINE_S)
            self.drainer.stop()
            await _stop_task(drainer_task, SHUTDOWN_DEADLINE_S)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            if monitoring is not None:
                monitoring.close()
                await monitoring.wait_closed()
            await self.api.aclose()
            stats = await self.store.stats()
            log.info("CDR monitor stopped: %s", summary_line(stats))


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def run_connector(settings: Settings) -> int:
    """Run the connector until SIGTERM/SIGINT; return the exit code."""
    store = await Store.open(settings.outbox_path)
    lock = DataDirLock(settings.data_dir)
    try:
        lock.acquire()
        log.info("connector %s starting with %s", __version__, settings.redacted())
        stop = asyncio.Event()
        _install_signal_handlers(stop)
        try:
            await Connector(settings, store).serve(stop)
        except OSError as error:
            if error.errno in (98, 99, 13):  # address in use / not available / permission
                raise StartupError(
                    f"cannot listen on MONITORING_HOST:MONITORING_PORT "
                    f"{settings.monitoring_host}:{settings.monitoring_port} ({error.strerror}): "
                    "choose another MONITORING_PORT or set MONITORING_ENABLED=false"
                ) from None
            raise
    finally:
        await store.close()
        lock.release()
    return 0
