"""The delivery gate shared by the drainers: pauses after outages and refused keys.

A drainer asks the gate before each send. After a RetryLater the gate closes for the backoff (or
the API's Retry-After); after an AuthRefused it closes for a growing pause (up to 5 minutes) and
logs an error at most once a minute. A delivered answer resets both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from connector.backoff import backoff_delay

MIN_DELAY_S = 1.0  # the floor (and first ceiling) of the drainers' backoff
MAX_DELAY_S = 300.0  # its cap, and the cap of the API's Retry-After
AUTH_LOG_INTERVAL_S = 60.0

log = logging.getLogger(__name__)


class DeliveryGate:
    """Tracks consecutive failures and when sending may resume."""

    def __init__(
        self,
        name: str,
        stopping: asyncio.Event,
        *,
        base_s: float = MIN_DELAY_S,
        cap_s: float = MAX_DELAY_S,
    ) -> None:
        self.name = name
        self.base_s = base_s
        self.cap_s = cap_s
        self._stopping = stopping
        self._failures = 0
        self._auth_failures = 0
        self._open_at = 0.0
        self._last_auth_log = -AUTH_LOG_INTERVAL_S

    @property
    def paused_for_s(self) -> float:
        """Seconds until sending may resume (0 when open)."""
        return max(0.0, self._open_at - time.monotonic())

    def delivered(self) -> None:
        """A send succeeded: the API is reachable and the key is good."""
        if self._failures or self._auth_failures:
            log.info("%s: the API accepts deliveries again", self.name)
        self._failures = 0
        self._auth_failures = 0

    def retry_later(self, detail: str, retry_after_s: float | None) -> float:
        """A transient failure: close the gate; return the delay chosen for the rows."""
        self._failures += 1
        if retry_after_s is not None:
            delay = min(MAX_DELAY_S, max(0.0, retry_after_s))
        else:
            delay = self._backoff(self._failures)
        self._open_at = max(self._open_at, time.monotonic() + delay)
        log.warning(
            "%s: API unavailable (%s); attempt %d, next in %.1fs",
            self.name,
            detail,
            self._failures,
            delay,
        )
        return delay

    def auth_refused(self, detail: str) -> float:
        """The key was refused: pause (no row changes state); log at most once a minute."""
        self._auth_failures += 1
        delay = self._backoff(self._auth_failures)
        self._open_at = max(self._open_at, time.monotonic() + delay)
        now = time.monotonic()
        if now - self._last_auth_log >= AUTH_LOG_INTERVAL_S:
            self._last_auth_log = now
            log.error(
                "%s: the API refused the key (%s); check API_KEY. Nothing is lost: "
                "rows stay pending, retrying in %.0fs",
                self.name,
                detail,
                delay,
            )
        return delay

    def _backoff(self, failures: int) -> float:
        # The floor keeps a retry from ever being immediate.
        return backoff_delay(failures, base_s=self.base_s, floor_s=self.base_s, cap_s=self.cap_s)

    async def wait_open(self) -> None:
        """Sleep until the gate opens or the drainer is stopping."""
        delay = self.paused_for_s
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=delay)
