"""`connector demo`: the real pipeline between a simulated PBX and a local API, all on loopback.

    PbxSimulator ──Cdr events──► FakeAmiServer ──AMI/TCP──► Connector ──HTTP──► Receiver
         └──── MixMonitor WAV files ──► spool folder ──► recording watcher ──┘

Nothing is read from the environment or a .env file: every setting is given explicitly, so the
demo runs the same on a bare machine and next to a configured connector. At the end it checks, by
UniqueID/Sequence and by event_id, that every generated CDR is in the outbox and that every one not
filtered reached the API exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import string
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TextIO

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from connector.config import Settings
from connector.demo.ami_server import AmiUser, FakeAmiServer
from connector.demo.options import DemoOptions
from connector.demo.pbx import PbxSimulator
from connector.demo.ports import free_port
from connector.demo.receiver import Receiver
from connector.demo.report import (
    Summary,
    audit_cdrs,
    audit_recordings,
    counts_since,
    problems,
    render_summary,
)
from connector.errors import StartupError
from connector.outbox.lock import DataDirLock
from connector.outbox.records import Kind
from connector.outbox.rows import OutboxStats
from connector.outbox.store import Store
from connector.progress import Progress

log = logging.getLogger("connector.demo")

AMI_USER = "connector"
LOGIN_TIMEOUT_S = 15.0
DRAIN_TIMEOUT_S = 30.0  # after the last call (and the end of an outage), for the backlog to drain
TTY_REFRESH_S = 0.25  # how often the live line is redrawn (on a terminal) and recomputed
LINE_EVERY_S = 2.0  # off a terminal: one progress line every so often
WATCHER_WARMUP_S = 1.0
OUTAGE_RETRY_AFTER = "1"  # the outage's 503 answers carry Retry-After: 1, as a real API would


class DemoSettings(Settings):
    """Settings from explicit values only: no environment variables, no .env, no secrets folder."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def random_api_key() -> str:
    """A key of the API's format (`sk_` and 32 letters or digits), new for each run."""
    alphabet = string.ascii_letters + string.digits
    return "sk_" + "".join(secrets.choice(alphabet) for _ in range(32))


def demo_settings(
    *, data_dir: Path, spool: Path, ami_port: int, ami_secret: str, api_key: str, api_url: str
) -> Settings:
    """The connector's settings for the demo: the simulators on loopback, short delays."""
    values: dict[str, Any] = dict(
        api_key=api_key,
        api_base_url=api_url,
        host_hostname="demo-pbx",
        ami_host="127.0.0.1",
        ami_port=ami_port,
        ami_username=AMI_USER,
        ami_password=ami_secret,
        asterisk_tz="",  # the simulated PBX writes this machine's local time, as Asterisk would
        data_dir=data_dir,
        cdr_batch_force_timeout=0.5,
        cdr_batch_timeout=1.0,
        cdr_filter_queue_attempts=True,  # so that both filter reasons show up
        monitoring_enabled=True,
        monitoring_host="127.0.0.1",
        monitoring_port=free_port(),
        recording_watcher_enabled=True,
        recording_watch_paths=(str(spool),),
        recording_stabilization_time=0.5,
        recording_process_existing=True,
        recording_cdr_wait_seconds=10.0,
        api_timeout=10.0,
    )
    return DemoSettings(**values)


def serve_outcome(serving: asyncio.Task[int]) -> tuple[int, str | None]:
    """The connector's exit code, and why when serve() did not return one."""
    if serving.cancelled():
        return 1, "it ended cancelled while stopping"
    error = serving.exception()
    if error is not None:
        log.error("the connector failed", exc_info=error)
        return 1, f"it failed: {error!r}"
    return serving.result(), None


class DemoRun:
    """One run: place calls (the API down for a while with --outage), drain, stop, audit."""

    def __init__(
        self,
        options: DemoOptions,
        settings: Settings,
        store: Store,
        receiver: Receiver,
        pbx: PbxSimulator,
        progress: Progress,
    ) -> None:
        self.options = options
        self.settings = settings
        self.store = store
        self.receiver = receiver
        self.pbx = pbx
        self.progress = progress
        self.interrupt = asyncio.Event()  # stop placing calls
        self.give_up = asyncio.Event()  # stop waiting for the backlog to drain
        self.began = time.monotonic()
        self.outage_until: float | None = None
        self.peak_backlog = 0
        self.recordings = False
        self._baseline: OutboxStats | None = None

    @property
    def baseline(self) -> OutboxStats:
        """The outbox's counts before the first call."""
        assert self._baseline is not None
        return self._baseline

    async def run(self) -> Summary:
        """Run the pipeline around the calls; stop it once the backlog drained (or the time is up)."""
        from connector.app import Connector  # here, not at the top: keeps `connector --help` quick

        self._baseline = await self.store.stats()
        connector = Connector(self.settings, self.store)
        self.recordings = self.settings.recording_watcher_enabled  # the connector runs its watcher
        stop = asyncio.Event()
        serving = asyncio.create_task(connector.serve(stop), name="connector")
        try:
            await self._wait_login(serving)
            drained = await self._calls_and_drain()
        finally:
            stop.set()
            await asyncio.wait({serving})
        return await self._summary(drained, *serve_outcome(serving))

    async def _wait_login(self, serving: asyncio.Task[int]) -> None:
        login = asyncio.create_task(self.pbx.ami.wait_for_logins(1))
        done, _ = await asyncio.wait({serving, login}, timeout=LOGIN_TIMEOUT_S, return_when="FIRST_COMPLETED")
        if login not in done:
            login.cancel()
            if serving in done:
                try:
                    serving.result()
                except OSError as error:  # e.g. the monitoring port was taken meanwhile
                    raise StartupError(f"the connector could not start: {error}") from None
            raise StartupError(
                f"the connector did not log in to the simulated PBX within {LOGIN_TIMEOUT_S:g} s"
            )

    async def _calls_and_drain(self) -> bool:
        if self.recordings:
            # The watcher takes stock of the spool folder, then arms its inotify watch, while the
            # connector logs in; a recording closed in between would wait for the 60 s rescan.
            await asyncio.sleep(WATCHER_WARMUP_S)
        self.began = time.monotonic()
        watch = asyncio.create_task(self._watch())
        outage = asyncio.create_task(self._outage()) if self.options.outage_s > 0 else None
        try:
            placed = await self.pbx.run(self.options.rate, self.options.duration_s, self.interrupt)
            timeout_s = DRAIN_TIMEOUT_S + max(0.0, (self.outage_until or 0.0) - time.monotonic())
            if outage is not None and self.outage_until is None:
                outage.cancel()  # interrupted before the outage began
            self.progress.say(
                f"placed {placed} calls; waiting for the backlog to drain (at most {timeout_s:.0f} s)"
            )
            return await self._wait_drained(timeout_s)
        finally:
            tasks = [task for task in (watch, outage) if task is not None]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _outage(self) -> None:
        await asyncio.sleep(max(0.0, self.began + self.options.outage_at_s - time.monotonic()))
        seconds = self.options.outage_s
        self.receiver.fail(503, duration_s=seconds, retry_after=OUTAGE_RETRY_AFTER, body="demo outage")
        self.outage_until = time.monotonic() + seconds
        self.progress.say(f"API outage: the local API answers 503 for {seconds:g} s; watch the backlog")
        await asyncio.sleep(seconds)
        self.progress.say("API back: the backlog drains")

    async def _watch(self) -> None:
        while True:
            self.progress.show(self._line(await self.store.stats()))
            await asyncio.sleep(TTY_REFRESH_S)

    def _line(self, stats: OutboxStats) -> str:
        cdr = counts_since(stats, self.baseline, Kind.CDR)
        self.peak_backlog = max(self.peak_backlog, cdr.pending)
        text = (
            f"{time.monotonic() - self.began:5.1f}s  calls {self.pbx.tally.placed}  stored {cdr.stored}"
            f"  sent {cdr.sent}  filtered {cdr.filtered}  backlog {cdr.pending}"
        )
        if self.recordings:
            recording = counts_since(stats, self.baseline, Kind.RECORDING)
            text += f"  recordings uploaded {recording.sent}/{len(self.pbx.tally.recordings)}"
        if self.outage_until is not None and time.monotonic() < self.outage_until:
            text += f"  API DOWN ({self.outage_until - time.monotonic():.0f}s left)"
        return text

    def _drained(self, stats: OutboxStats) -> bool:
        tally = self.pbx.tally
        cdr = counts_since(stats, self.baseline, Kind.CDR)
        if cdr.stored < len(tally.cdrs) - tally.unheard or cdr.pending:
            return False
        if not self.recordings:
            return True
        recording = counts_since(stats, self.baseline, Kind.RECORDING)
        return recording.stored >= len(tally.recordings) and not recording.pending

    async def _wait_drained(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.give_up.is_set():
            if self._drained(await self.store.stats()):
                return True
            await asyncio.sleep(0.2)
        return False

    async def _summary(self, drained: bool, exit_code: int, failure: str | None) -> Summary:
        final = await self.store.stats()
        self.progress.show(self._line(final), force=True)
        self.progress.end()
        snapshot = self.receiver.state.snapshot()
        recordings = counts_since(final, self.baseline, Kind.RECORDING)
        return Summary(
            options=self.options,
            tally=self.pbx.tally,
            cdrs=await audit_cdrs(self.store, self.pbx.tally, snapshot["counts"]),
            recordings=audit_recordings(
                self.pbx.tally, recordings, snapshot["recording_list"], self.recordings
            ),
            drained=drained,
            exit_code=exit_code,
            failure=failure,
            elapsed_s=time.monotonic() - self.began,
            outbox=str(self.settings.outbox_path) + (" (temporary)" if self.options.data_dir is None else ""),
            outage_s=self.options.outage_s if self.outage_until is not None else 0.0,
            peak_backlog=self.peak_backlog,
            refused=sum(n for answer, n in snapshot["answers"].items() if answer.endswith(" 503")),
            api=snapshot,
        )


@contextlib.asynccontextmanager
async def _outbox(data_dir: Path, path: Path) -> AsyncIterator[Store]:
    """Lock DATA_DIR (as `connector run` does) and open its outbox."""
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        store = await Store.open(path)
        try:
            yield store
        finally:
            await store.close()
    finally:
        lock.release()


@contextlib.contextmanager
def _ctrl_c_steps(demo: DemoRun) -> Iterator[None]:
    """Ctrl-C once: no more calls, drain, report. Twice: stop waiting for the drain. Thrice: quit."""
    loop = asyncio.get_running_loop()

    def first() -> None:
        demo.interrupt.set()
        loop.add_signal_handler(signal.SIGINT, second)
        demo.progress.say("Ctrl-C: no more calls; draining the backlog (Ctrl-C again: stop waiting)")

    def second() -> None:
        demo.give_up.set()
        loop.remove_signal_handler(signal.SIGINT)  # a third Ctrl-C interrupts as usual
        demo.progress.say("Ctrl-C: not waiting for the backlog; stopping the connector")

    try:
        loop.add_signal_handler(signal.SIGINT, first)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def _data_dir(requested: Path | None, scratch: Path) -> Path:
    folder = requested.absolute() if requested is not None else scratch / "data"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StartupError(f"--data-dir: cannot create {folder}: {error.strerror}") from None
    return folder


def _banner(options: DemoOptions, ami: FakeAmiServer, settings: Settings, temporary: bool) -> list[str]:
    calls = f"placing {options.rate:g} calls/s for {options.duration_s:g} s"
    if options.outage_s:
        calls += f"; the API goes down for {options.outage_s:g} s after {options.outage_at_s:g} s"
    kept = " (temporary, deleted at the end)" if temporary else ""
    return [
        f"connector demo: simulated PBX (AMI on 127.0.0.1:{ami.port}) -> connector -> local API"
        f" ({settings.api_url})",
        calls,
        f"outbox: {settings.outbox_path}{kept}",
        f"metrics: http://{settings.monitoring_host}:{settings.monitoring_port}/metrics"
        " (while it runs; Ctrl-C stops the calls early)",
    ]


async def run_demo(options: DemoOptions, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run the demo; print the live progress to `err` and the summary to `out`; return the exit code."""
    out = out or sys.stdout
    # The watch loop already paces the redraws (TTY_REFRESH_S): draw each one it shows.
    progress = Progress(err or sys.stderr, redraw_s=0, line_every_s=LINE_EVERY_S)
    api_key, ami_secret = random_api_key(), secrets.token_hex(12)
    with (
        tempfile.TemporaryDirectory(prefix="connector-demo-") as scratch,
        Receiver(api_key=api_key) as receiver,
    ):
        spool = Path(scratch) / "monitor"
        spool.mkdir()
        data_dir = _data_dir(options.data_dir, Path(scratch))
        async with FakeAmiServer({AMI_USER: AmiUser(ami_secret)}) as ami:
            settings = demo_settings(
                data_dir=data_dir,
                spool=spool,
                ami_port=ami.port,
                ami_secret=ami_secret,
                api_key=api_key,
                api_url=receiver.base_url,
            )
            async with _outbox(data_dir, settings.outbox_path) as store:
                for line in _banner(options, ami, settings, temporary=options.data_dir is None):
                    progress.say(line)
                demo = DemoRun(options, settings, store, receiver, PbxSimulator(ami, spool), progress)
                with _ctrl_c_steps(demo):
                    summary = await demo.run()
    print("\n".join(render_summary(summary)), file=out, flush=True)
    return 1 if problems(summary) else 0
