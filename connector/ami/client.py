"""The AMI connection owner: one session at a time, reconnect forever, keepalive, gap accounting.

panoramisk's Manager reconnects on its own after a failed first connect (a second connect() then
runs two sessions and duplicates events), waits a fixed whole number of seconds between tries, and
never checks that a Ping is answered. `AmiClient.run()` replaces that logic: it is the only owner
of the connection, opens exactly one `AmiSession` at a time with our `AmiProtocol`, backs off
exponentially with full jitter (capped at 30 s), pings on its own schedule and aborts the
transport when no Pong comes back, and logs and counts every gap (Asterisk does not keep events
for absent clients: whatever it emitted during a gap must be recovered from Master.csv).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from connector.ami.protocol import CdrCallback
from connector.ami.session import DEFAULT_EVENTS, AmiSession
from connector.backoff import backoff_delay
from connector.errors import LoginRefused
from connector.metrics import (
    AMI_CONNECTION_STATUS,
    AMI_DISCONNECTED_SECONDS,
    AMI_DISCONNECTIONS,
    AMI_LOGIN_FAILURES,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_EVENTS",
    "AmiClient",
    "AmiSession",
    "ReadGate",
]


class ReadGate(Protocol):
    """Asks the reader to pause while the writer is behind (connector.ami.ingest.CdrWriter)."""

    @property
    def saturated(self) -> bool:
        """True while reading should pause."""
        ...

    def watch(self, on_change: Callable[[bool], None]) -> None:
        """Register a callback called with True to pause reading, False to resume."""
        ...


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


class AmiClient:
    """Keep exactly one logged-in AMI session alive, forever; hand Cdr headers to `on_cdr`."""

    def __init__(
        self,
        host: str,
        port: int,
        username: str,
        password: str,
        on_cdr: CdrCallback,
        *,
        events: str = DEFAULT_EVENTS,
        ping_interval_s: float = 5.0,
        ping_timeout_s: float = 10.0,
        connect_timeout_s: float = 10.0,
        action_timeout_s: float = 10.0,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        stable_after_s: float = 30.0,
        on_state_change: Callable[[bool], None] | None = None,
        gate: ReadGate | None = None,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.host, self.port = host, port
        self.username, self._password = username, password
        self._on_cdr = on_cdr
        self.events = events
        self.ping_interval_s, self.ping_timeout_s = ping_interval_s, ping_timeout_s
        self.connect_timeout_s, self.action_timeout_s = connect_timeout_s, action_timeout_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self.stable_after_s = stable_after_s
        self._on_state_change = on_state_change
        self._gate = gate
        if gate is not None:
            gate.watch(self._gate_changed)
        self._rand, self._sleep = rand, sleep
        self._session: AmiSession | None = None
        self._connected = asyncio.Event()
        self._closing = asyncio.Event()
        self._started = False
        self._ever_connected = False
        self._last_problem = ""
        self._down_mark = time.monotonic()
        self._down_since = time.time()

    @property
    def connected(self) -> bool:
        """True while a session is logged in."""
        return self._connected.is_set()

    @property
    def session(self) -> AmiSession | None:
        """The logged-in session, if any."""
        return self._session

    async def wait_connected(self) -> None:
        """Return once a session is logged in."""
        await self._connected.wait()

    async def run(self) -> None:
        """Connect, log in, serve, and reconnect with backoff until close() or cancellation."""
        if self._started:
            raise RuntimeError("AmiClient.run() was already started: one owner, one session")
        self._started = True
        self._down_mark, self._down_since = time.monotonic(), time.time()
        failures = 0
        try:
            while not self._closing.is_set():
                session = await self._open_session()
                if session is None:
                    failures += 1
                elif self._closing.is_set():  # close() came while we were logging in
                    session.close()
                    break
                else:
                    lasted_s = await self._serve(session)
                    failures = 0 if lasted_s >= self.stable_after_s else failures + 1
                if self._closing.is_set():
                    break
                self._account_down()
                # No floor: any delay up to the ceiling, so connectors spread out after a restart.
                delay_s = backoff_delay(
                    max(failures, 1), base_s=self.backoff_initial_s, cap_s=self.backoff_max_s, rand=self._rand
                )
                log.debug("next AMI connection attempt in %.2f s", delay_s)
                await self._pause(delay_s)
        finally:
            self._stop_session()
            self._account_down()

    def close(self) -> None:
        """Stop run(): close the session and stop reconnecting."""
        self._closing.set()
        if self._session is not None:
            self._session.close()

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Log off cleanly (best effort), then close."""
        self._closing.set()
        if self._session is not None:
            await self._session.logoff(timeout_s)
        self.close()

    async def _open_session(self) -> AmiSession | None:
        where = f"{self.host}:{self.port}"
        try:
            session = await AmiSession.open(
                self.host, self.port, self._on_cdr, timeout_s=self.connect_timeout_s
            )
        except (OSError, TimeoutError) as error:
            self._problem(f"cannot reach AMI at {where}: {error or 'timed out'}")
            return None
        try:
            await session.login(
                self.username, self._password, events=self.events, timeout_s=self.action_timeout_s
            )
        except LoginRefused as refused:
            AMI_LOGIN_FAILURES.inc()
            AMI_DISCONNECTIONS.inc()
            self._problem(
                f"AMI login refused at {where} for user {self.username!r} ({refused}): check "
                "AMI_USERNAME/AMI_PASSWORD against manager.conf (and its permit/deny lines)",
                level=logging.ERROR,
            )
            return None
        except (TimeoutError, ConnectionError, OSError) as error:
            session.abort("login failed")
            self._problem(f"AMI login at {where} got no answer: {error or 'timed out'}")
            return None
        except BaseException:
            session.abort("cancelled during login")
            raise
        return session

    def _problem(self, text: str, level: int = logging.WARNING) -> None:
        # Log a problem once when it appears, not at every retry; a session resets it.
        if text != self._last_problem:
            log.log(level, "%s; retrying with backoff (up to %.0f s)", text, self.backoff_max_s)
            self._last_problem = text
        else:
            log.debug("%s (still)", text)

    async def _serve(self, session: AmiSession) -> float:
        started = time.monotonic()
        self._session = session
        if self._gate is not None and self._gate.saturated:
            session.set_reading(False)
        self._set_connected(True)
        keepalive = asyncio.create_task(self._keepalive(session), name="ami-keepalive")
        try:
            await session.lost
        finally:
            keepalive.cancel()
            self._stop_session()
        lasted_s = time.monotonic() - started
        if not self._closing.is_set():
            AMI_DISCONNECTIONS.inc()
            log.warning(
                "AMI session to %s:%d lost after %.1f s (%s); reconnecting. Asterisk does not "
                "keep events for absent clients: Cdr events until the next session are not sent",
                self.host,
                self.port,
                lasted_s,
                session.protocol.close_reason,
            )
        return lasted_s

    def _gate_changed(self, saturated: bool) -> None:
        if self._session is not None:
            self._session.set_reading(not saturated)

    def _stop_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            session.close()
        if self._connected.is_set():
            self._set_connected(False)

    def _set_connected(self, connected: bool) -> None:
        if connected:
            self._account_down()
            self._connected.set()
            self._on_logged_in()
        else:
            self._connected.clear()
            # The gap starts now: it is what ami_disconnected_seconds_total accumulates.
            self._down_mark, self._down_since = time.monotonic(), time.time()
        AMI_CONNECTION_STATUS.set(1 if connected else 0)
        if self._on_state_change is not None:
            try:
                self._on_state_change(connected)
            except Exception:
                log.exception("AMI state-change callback failed")

    def _on_logged_in(self) -> None:
        gap_s = time.time() - self._down_since
        banner = self._session.banner if self._session else None
        if self._ever_connected:
            log.warning(
                "AMI session re-established with %s:%d after %.1f s without one (%s to %s UTC): "
                "Cdr events Asterisk produced in this gap were not received; recover them from "
                "Master.csv",
                self.host,
                self.port,
                gap_s,
                _utc(self._down_since),
                _utc(time.time()),
            )
        else:
            log.info(
                "AMI session established with %s:%d (%s) as %r after %.1f s",
                self.host,
                self.port,
                banner,
                self.username,
                gap_s,
            )
        self._ever_connected = True
        self._last_problem = ""

    def _account_down(self) -> None:
        now = time.monotonic()
        if not self.connected:
            AMI_DISCONNECTED_SECONDS.inc(max(now - self._down_mark, 0.0))
        self._down_mark = now

    async def _keepalive(self, session: AmiSession) -> None:
        while True:
            await asyncio.sleep(self.ping_interval_s)
            try:
                await session.ping(self.ping_timeout_s)
            except TimeoutError:
                log.warning(
                    "no answer to AMI Ping within %.1f s: the link is presumed dead (half-open)",
                    self.ping_timeout_s,
                )
                session.abort(f"keepalive: no answer to Ping within {self.ping_timeout_s:g} s")
                return
            except ConnectionError:
                return

    async def _pause(self, delay_s: float) -> None:
        sleeper = asyncio.ensure_future(self._sleep(delay_s))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({sleeper, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            closing.cancel()
