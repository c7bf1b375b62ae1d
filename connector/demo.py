"""`connector demo`: the real pipeline between a simulated PBX and a local API, all on loopback.

    PbxSimulator ──Cdr events──► FakeAmiServer ──AMI/TCP──► Connector ──HTTP──► Receiver
         └──── MixMonitor WAV files ──► spool folder ──► recording watcher ──┘

Nothing is read from the environment or a .env file: every setting is given explicitly, so the
demo runs the same on a bare machine and next to a configured connector. At the end it checks, by
UniqueID/Sequence and by event_id, that every generated CDR is in the outbox and that every one not
filtered reached the API exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import string
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from connector.cdr.identity import event_id
from connector.config import Settings
from connector.errors import StartupError
from connector.logs import configure_logging
from connector.outbox.lock import DataDirLock
from connector.outbox.records import CdrRow, Kind, State
from connector.outbox.rows import OutboxStats
from connector.outbox.store import Store
from connector.sim.ami_server import AmiUser, FakeAmiServer
from connector.sim.pbx import PbxSimulator, PbxTally
from connector.sim.receiver import Receiver

log = logging.getLogger("connector.demo")

DEFAULT_DURATION_S = 20.0
DEFAULT_RATE = 5.0
AMI_USER = "connector"
LOGIN_TIMEOUT_S = 15.0
DRAIN_TIMEOUT_S = 30.0  # after the last call (and the end of an outage), for the backlog to drain
TTY_REFRESH_S = 0.25
LINE_EVERY_S = 2.0
WATCHER_WARMUP_S = 1.0
OUTAGE_RETRY_AFTER = "1"  # the outage's 503 answers carry Retry-After: 1, as a real API would


@dataclass(frozen=True)
class DemoOptions:
    """What `connector demo` was asked to do."""

    duration_s: float = DEFAULT_DURATION_S
    rate: float = DEFAULT_RATE
    outage_s: float = 0.0
    data_dir: Path | None = None

    @property
    def outage_at_s(self) -> float:
        """When the outage starts, in seconds after the first call: centred in the run."""
        return max(0.0, (self.duration_s - self.outage_s) / 2)


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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


@dataclass(frozen=True)
class Counts:
    """One outbox table's rows added since the demo started, and its whole backlog."""

    stored: int
    sent: int
    filtered: int
    failed: int
    pending: int


def counts_since(stats: OutboxStats, baseline: OutboxStats, kind: Kind) -> Counts:
    """Rows added since `baseline` (an existing --data-dir may hold older ones); pending: all."""
    now, before = stats.tables[kind].counts, baseline.tables[kind].counts

    def added(state: State) -> int:
        return now[state] - before[state]

    return Counts(
        stored=sum(now.values()) - sum(before.values()),
        sent=added(State.SENT),
        filtered=added(State.FILTERED),
        failed=added(State.FAILED),
        pending=now[State.PENDING],
    )


@dataclass
class CdrAudit:
    """Every generated CDR followed into the outbox and to the API."""

    generated: int = 0
    stored: int = 0
    states: Counter[State] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    received_once: int = 0
    not_received: int = 0  # marked sent, yet the API never saw its event_id
    duplicated: int = 0

    @property
    def missing(self) -> int:
        """Generated but not in the outbox."""
        return self.generated - self.stored


async def audit_cdrs(store: Store, tally: PbxTally, api_counts: Mapping[str, int]) -> CdrAudit:
    """Find each generated CDR in the outbox by (UniqueID, Sequence), then its event_id at the API."""
    rows: dict[tuple[str, str], CdrRow] = {}
    for uniqueid in dict.fromkeys(uniqueid for uniqueid, _ in tally.cdrs):
        for row in await store.cdrs_by_uniqueid(uniqueid):
            rows[(row.uniqueid, dict(row.headers).get("Sequence", ""))] = row
    audit = CdrAudit(generated=len(tally.cdrs))
    for key in tally.cdrs:
        found = rows.get(key)
        if found is None:
            continue
        row = found
        audit.stored += 1
        audit.states[row.state] += 1
        if row.state is State.FILTERED:
            audit.filtered[row.filter_reason or "unknown"] += 1
        elif row.state is State.SENT:
            seen = api_counts.get(event_id(row.dedupe_key), 0)
            audit.received_once += seen == 1
            audit.duplicated += seen > 1
            audit.not_received += seen == 0
    return audit


@dataclass
class RecordingAudit:
    """Every recording written followed to the API."""

    active: bool
    written: int
    counts: Counts
    received: int = 0  # with the very bytes written
    linked: int = 0  # uploaded with the UniqueID of their call
    altered: int = 0  # received with other bytes
    duplicated: int = 0

    @property
    def missing(self) -> int:
        """Written, not received (intact)."""
        return self.written - self.received - self.altered


def audit_recordings(
    tally: PbxTally, counts: Counts, received: list[dict[str, Any]], active: bool
) -> RecordingAudit:
    """Match the API's uploads to the files written, by name and SHA-256."""
    audit = RecordingAudit(active=active, written=len(tally.recordings), counts=counts)
    seen: Counter[str] = Counter()
    for record in received:
        name = str(record.get("file_name", ""))
        if name not in tally.recordings:
            continue
        seen[name] += 1
        if seen[name] > 1:
            continue
        if record.get("received_sha256") == tally.recordings[name]:
            audit.received += 1
        else:
            audit.altered += 1
        audit.linked += bool(record.get("uniqueid")) and str(record["uniqueid"]) in name
    audit.duplicated = sum(1 for count in seen.values() if count > 1)
    return audit


class Progress:
    """The live line: rewritten in place on a terminal, else printed every couple of seconds."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self._width = 0
        self._last_line = -LINE_EVERY_S

    def show(self, text: str, *, force: bool = False) -> None:
        """Show the current state."""
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
        elif force or time.monotonic() - self._last_line >= LINE_EVERY_S:
            self._last_line = time.monotonic()
            self.stream.write(text + "\n")
        self.stream.flush()

    def say(self, text: str) -> None:
        """Print a message line (below the live line on a terminal)."""
        if self.tty and self._width:
            self.stream.write("\n")
            self._width = 0
        self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        """Leave the live line as it is and move below it."""
        if self.tty and self._width:
            self.stream.write("\n")
            self._width = 0
        self.stream.flush()


@dataclass
class Summary:
    """Everything the end-of-run report shows."""

    options: DemoOptions
    tally: PbxTally
    cdrs: CdrAudit
    recordings: RecordingAudit
    drained: bool
    elapsed_s: float
    outbox: str
    exit_code: int = 0  # what the connector's serve() returned
    failure: str | None = None  # why serve() did not return
    outage_s: float = 0.0  # how long the API was down (0: no outage, or interrupted before it)
    peak_backlog: int = 0
    refused: int = 0  # requests the API answered 503 during the outage
    api: dict[str, Any] = field(default_factory=dict)


def serve_outcome(serving: asyncio.Task[int]) -> tuple[int, str | None]:
    """The connector's exit code, and why when serve() did not return one."""
    if serving.cancelled():
        return 1, "it ended cancelled while stopping"
    error = serving.exception()
    if error is not None:
        log.error("the connector failed", exc_info=error)
        return 1, f"it failed: {error!r}"
    return serving.result(), None


def recordings_active(connector: object, settings: Settings) -> bool:
    """Tell whether this build's pipeline runs a recording watcher (it queues recordings)."""
    from connector.recordings.watcher import RecordingWatcher

    has_watcher = any(isinstance(part, RecordingWatcher) for part in vars(connector).values())
    return has_watcher and settings.recording_watcher_enabled


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
        self.recordings = recordings_active(connector, self.settings)
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


def _counted(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items(), key=lambda kv: -kv[1]))


def problems(summary: Summary) -> list[str]:
    """What went wrong, one line each; empty when nothing was lost or doubled."""
    cdrs, tally = summary.cdrs, summary.tally
    found = []
    if summary.exit_code:
        why = summary.failure or "a part of it failed (see the log)"
        found.append(f"the connector stopped with exit code {summary.exit_code}: {why}")
    if cdrs.missing:
        unheard = f" ({tally.unheard} sent while no AMI client was connected)" if tally.unheard else ""
        found.append(f"{cdrs.missing} generated CDR(s) are not in the outbox{unheard}")
    if cdrs.states[State.PENDING]:
        found.append(f"{cdrs.states[State.PENDING]} CDR(s) still pending: the backlog did not drain in time")
    if cdrs.states[State.FAILED]:
        found.append(f"{cdrs.states[State.FAILED]} CDR(s) rejected by the API (state failed)")
    if cdrs.not_received:
        found.append(f"{cdrs.not_received} CDR(s) marked sent that the API never received")
    if cdrs.duplicated:
        found.append(f"{cdrs.duplicated} CDR(s) reached the API more than once")
    if not summary.drained and not found:
        found.append("the backlog did not drain in time")
    recordings = summary.recordings
    if recordings.active:
        if recordings.missing:
            found.append(f"{recordings.missing} recording(s) never reached the API")
        if recordings.altered:
            found.append(f"{recordings.altered} recording(s) reached the API with other bytes")
        if recordings.duplicated:
            found.append(f"{recordings.duplicated} recording(s) reached the API more than once")
    return found


def _recording_line(recordings: RecordingAudit) -> str:
    if not recordings.active:
        return f"{recordings.written} written; not uploaded: this build's pipeline has no recording watcher"
    counts = recordings.counts
    return (
        f"{recordings.written} written, {counts.stored} queued, {counts.sent} uploaded,"
        f" {recordings.received} received intact ({recordings.linked} linked to their call's UniqueID)"
    )


def render_summary(summary: Summary) -> list[str]:
    """The report printed at the end of the demo."""
    cdrs, tally, api = summary.cdrs, summary.tally, summary.api
    lines = [
        f"Summary ({summary.elapsed_s:.1f} s)",
        f"  calls placed          {tally.placed:>6}  ({_counted(tally.calls)})",
        f"  CDRs generated        {cdrs.generated:>6}  (hangup handler h {tally.h_cdrs},"
        f" queue attempts {tally.queue_attempts}; {_counted(tally.dispositions)})",
        f"  stored in the outbox  {cdrs.stored:>6}",
        f"  sent to the API       {cdrs.states[State.SENT]:>6}",
        f"  filtered              {cdrs.states[State.FILTERED]:>6}  ({_counted(cdrs.filtered) or 'none'})",
        f"  failed                {cdrs.states[State.FAILED]:>6}",
        f"  still pending         {cdrs.states[State.PENDING]:>6}",
        f"  received by the API   {api.get('cdrs', 0):>6}  unique event_ids,"
        f" {api.get('duplicates', 0)} duplicate(s), in {api.get('batches', 0)} batch(es)",
    ]
    if summary.outage_s:
        lines.append(
            f"  API outage            {summary.outage_s:>5g}s  {summary.refused} request(s)"
            f" answered 503; the backlog peaked at {summary.peak_backlog} CDR(s)"
        )
    lines += [
        f"  recordings            {_recording_line(summary.recordings)}",
        f"  outbox                {summary.outbox}",
    ]
    found = problems(summary)
    if not found:
        verdict = (
            f"Verdict: nothing lost. All {cdrs.generated} CDRs generated are in the outbox, and all"
            f" {cdrs.received_once} not filtered reached the API exactly once (by event_id)"
        )
        if summary.recordings.active:
            verdict += f"; all {summary.recordings.received} recordings arrived intact"
        return [*lines, "", verdict + "."]
    return [
        *lines,
        "",
        "Verdict: something was lost or went wrong:",
        *(f"  - {problem}" for problem in found),
    ]


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
    progress = Progress(err or sys.stderr)
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


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {value}")
    return number


def _not_negative(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return number


def cmd_demo(args: argparse.Namespace) -> int:
    """Run `connector demo`."""
    configure_logging(args.log_level)
    options = DemoOptions(args.duration, args.rate, args.outage, args.data_dir)
    return asyncio.run(run_demo(options))


def add_demo_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `connector demo` with the command line."""
    demo = subparsers.add_parser(
        "demo",
        help="see it work without an Asterisk: a simulated PBX, a local API, the real pipeline",
        description="Run the real pipeline between a simulated PBX (AMI server, call mix, recordings) and"
        " a local API, all on 127.0.0.1, then check that nothing was lost. Reads no environment"
        " variables and no .env file.",
    )
    demo.add_argument(
        "--duration", type=_positive, default=DEFAULT_DURATION_S, metavar="SECONDS",
        help=f"how long to place calls (default {DEFAULT_DURATION_S:g})",
    )  # fmt: skip
    demo.add_argument(
        "--rate", type=_positive, default=DEFAULT_RATE, metavar="CALLS_PER_SECOND",
        help=f"calls placed per second (default {DEFAULT_RATE:g})",
    )  # fmt: skip
    demo.add_argument(
        "--outage", type=_not_negative, default=0.0, metavar="SECONDS",
        help="the API answers 503 for this long in the middle of the run (default 0: no outage)",
    )  # fmt: skip
    demo.add_argument(
        "--data-dir", type=Path, default=None, metavar="DIR",
        help="keep the outbox here (default: a temporary folder, deleted at the end)",
    )  # fmt: skip
    demo.add_argument(
        "--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="ERROR",
        help="the connector's log lines on stderr (default ERROR: only the progress line)",
    )  # fmt: skip
    demo.set_defaults(handler=cmd_demo)


def main(argv: list[str] | None = None) -> int:
    """Run `connector demo` on its own (python -m connector.demo ARGS)."""
    parser = argparse.ArgumentParser(prog="connector")
    add_demo_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    try:
        return cmd_demo(args)
    except StartupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
