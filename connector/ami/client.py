"""The AMI connection owner: one session at a time, reconnect forever, keepalive, gap accounting.

panoramisk's Manager reconnects on its own after a failed first connect (a second connect() then
runs two sessions and duplicates events), waits a fixed whole number of seconds between tries, and
never checks that a Ping is answered. `AmiClient.run()` replaces that logic: it is the only owner
of the connection and opens exactly one `AmiSession` at a time with our `AmiProtocol`.

Asterisk keeps no events for absent clients, so every second away is a second of CDRs only gap
recovery can bring back. Retries therefore follow what failed:

- AMI not there (connection refused, TCP connect timed out, session lost): the first try at once,
  then one try every `reconnect_interval_s` (0.5 s), for as long as it takes. The connector is its
  PBX's only client retrying this way, so there is no herd to spread with jitter; a refused
  connection costs Asterisk nothing.
- AMI there but refusing us (login refused, TLS handshake failed, no banner): a configuration
  problem, logged once as an ERROR and retried with exponential backoff and full jitter from 1 s up
  to 30 s, since fast retries of a wrong secret can trip Asterisk's authentication limits.

A Ping every `ping_interval_s` (2.5 s) with `ping_timeout_s` (5 s) to answer finds a half-open link
within 7.5 s; while reading is paused for backpressure a Pong cannot be read, so no verdict is
given then. Every gap is logged and counted.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Protocol

from connector.ami.protocol import CdrCallback
from connector.ami.session import DEFAULT_EVENTS, AmiSession
from connector.backoff import backoff_delay
from connector.errors import HandshakeFailed, LoginRefused
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


RECONNECT_INTERVAL_S = 0.5
PING_INTERVAL_S = 2.5
PING_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 1.0


class Attempt(Enum):
    """How one connection attempt ended: what decides the wait before the next one."""

    UNREACHABLE = "unreachable"  # nothing accepted the connection, or it did not answer
    REFUSED = "refused"  # AMI answered but would not have us: login, TLS or banner
    SERVED = "served"  # a session was logged in, and is now over


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
        tls: ssl.SSLContext | None = None,
        tls_ca_file: Path | None = None,
        ping_interval_s: float = PING_INTERVAL_S,
        ping_timeout_s: float = PING_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
        action_timeout_s: float = 10.0,
        reconnect_interval_s: float = RECONNECT_INTERVAL_S,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 30.0,
        on_state_change: Callable[[bool], None] | None = None,
        gate: ReadGate | None = None,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.host, self.port = host, port
        self.username, self._password = username, password
        self._on_cdr = on_cdr
        self.events = events
        self._tls, self._tls_ca_file = tls, tls_ca_file
        self.ping_interval_s, self.ping_timeout_s = ping_interval_s, ping_timeout_s
        self.connect_timeout_s, self.action_timeout_s = connect_timeout_s, action_timeout_s
        self.reconnect_interval_s = reconnect_interval_s
        self.backoff_initial_s, self.backoff_max_s = backoff_initial_s, backoff_max_s
        self._on_state_change = on_state_change
        self._gate = gate
        if gate is not None:
            gate.watch(self._gate_changed)
        self._rand, self._sleep, self._clock = rand, sleep, clock
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
        refusals = 0
        try:
            while not self._closing.is_set():
                started = self._clock()
                session, attempt = await self._open_session()
                if session is not None:
                    if self._closing.is_set():  # close() came while we were logging in
                        session.close()
                        break
                    await self._serve(session)
                if self._closing.is_set():
                    break
                self._account_down()
                refusals = refusals + 1 if attempt is Attempt.REFUSED else 0
                delay_s = self.retry_delay(attempt, refusals, self._clock() - started)
                log.debug("next AMI connection attempt in %.2f s", delay_s)
                await self._pause(delay_s)
        finally:
            self._stop_session()
            self._account_down()

    def retry_delay(self, attempt: Attempt, refusals: int, elapsed_s: float) -> float:
        """The wait before the next attempt, after one that ended as `attempt` and took `elapsed_s`."""
        if attempt is Attempt.REFUSED:
            return backoff_delay(
                refusals,
                base_s=self.backoff_initial_s,
                cap_s=self.backoff_max_s,
                floor_s=min(self.backoff_initial_s, self.backoff_max_s),
                rand=self._rand,
            )
        # Attempts start at most once per interval: at once after a long session or a slow
        # timeout, never in a tight loop when a session is dropped as soon as it is made.
        return max(0.0, self.reconnect_interval_s - elapsed_s)

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

    async def _open_session(self) -> tuple[AmiSession | None, Attempt]:
        where = f"{self.host}:{self.port}"
        every = f"retrying every {self.reconnect_interval_s:g} s"
        backing_off = f"retrying with backoff (up to {self.backoff_max_s:g} s)"
        try:
            session = await AmiSession.open(
                self.host,
                self.port,
                self._on_cdr,
                timeout_s=self.connect_timeout_s,
                tls=self._tls,
                handshake_timeout_s=self.action_timeout_s,
                ca_file=self._tls_ca_file,
            )
        except HandshakeFailed as failed:
            AMI_LOGIN_FAILURES.inc()
            self._problem(f"no AMI session: {failed}", backing_off, logging.ERROR)
            return None, Attempt.REFUSED
        except (OSError, TimeoutError) as error:
            self._problem(f"cannot reach AMI at {where}: {error or 'timed out'}", every)
            return None, Attempt.UNREACHABLE
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
                backing_off,
                logging.ERROR,
            )
            return None, Attempt.REFUSED
        except (TimeoutError, ConnectionError, OSError) as error:
            session.abort("login failed")
            self._problem(f"AMI login at {where} got no answer: {error or 'timed out'}", every)
            return None, Attempt.UNREACHABLE
        except BaseException:
            session.abort("cancelled during login")
            raise
        return session, Attempt.SERVED

    def _problem(self, text: str, retry: str, level: int = logging.WARNING) -> None:
        # Log a problem once when it appears, not at every retry; a session resets it.
        if text != self._last_problem:
            log.log(level, "%s; %s", text, retry)
            self._last_problem = text
        else:
            log.debug("%s (still)", text)

    async def _serve(self, session: AmiSession) -> None:
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
            if session.reading_paused:
                continue  # a Pong could not be read now: no verdict on the link
            pauses = session.pauses
            try:
                await session.ping(self.ping_timeout_s)
            except TimeoutError:
                if session.reading_paused or session.pauses != pauses:
                    continue
                log.warning(
                    "no answer to AMI Ping within %g s: the link is presumed dead (half-open)",
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
