"""The CDR drainer: take due rows, filter, map, post, and settle each row.

Batch mode posts up to CDR_BATCH_SIZE CDRs per request: a full batch goes at once, a partial batch
once its oldest CDR has waited CDR_BATCH_FORCE_TIMEOUT seconds. Direct mode posts one CDR per
request as soon as it is stored. Both keep up to CDR_MAX_CONCURRENT requests in flight. With nothing
due, the drainer sleeps until the listener commits new rows, or CDR_BATCH_TIMEOUT seconds at most
(to pick up rows whose retry time came, or that `connector resend` made pending).

Each answer maps to exactly one transition (see connector.errors): delivered → sent; RetryLater →
stays pending, rescheduled; Rejected → the batch is split in halves until the rejected rows are
alone, and only they become failed; AuthRefused → no row changes state and the drainer pauses.
No database transaction is open while a request is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from connector import metrics
from connector.cdr.filters import FilterRules, filter_reason
from connector.cdr.mapping import MappingOptions, cdr_payload
from connector.config import CdrMode, Settings
from connector.drain.loop import SlotDrainer, wait_for_event
from connector.errors import AuthRefused, OutboxError, Rejected, RetryLater
from connector.outbox.records import CdrRow, Kind
from connector.outbox.store import Store
from connector.timeutil import age_seconds

log = logging.getLogger(__name__)

Item = tuple[int, dict[str, Any]]


class CdrSender(Protocol):
    """What the drainer needs of the API client."""

    async def post_cdrs(self, cdrs: Sequence[dict[str, Any]]) -> None: ...


@dataclass(frozen=True)
class DrainSettings:
    """How the CDR drainer paces itself."""

    direct: bool = False
    batch_size: int = 100
    force_timeout_s: float = 5.0
    idle_poll_s: float = 30.0
    max_concurrent: int = 10
    retry_base_s: float = 1.0  # backoff after a failed send: 1 s, doubling, full jitter …
    retry_cap_s: float = 300.0  # … up to 5 minutes

    @classmethod
    def from_settings(cls, settings: Settings) -> DrainSettings:
        """Take CDR_MODE, CDR_BATCH_* and CDR_MAX_CONCURRENT."""
        return cls(
            direct=settings.cdr_mode is CdrMode.DIRECT,
            batch_size=settings.cdr_batch_size,
            force_timeout_s=settings.cdr_batch_force_timeout,
            idle_poll_s=settings.cdr_batch_timeout,
            max_concurrent=settings.cdr_max_concurrent,
        )


class CdrDrainer(SlotDrainer[list[CdrRow]]):
    """Delivers pending CDRs until stopped."""

    def __init__(
        self,
        store: Store,
        api: CdrSender,
        rules: FilterRules,
        options: MappingOptions,
        pace: DrainSettings,
        new_rows: asyncio.Event,
    ) -> None:
        self._store = store
        self._api = api
        self._rules = rules
        self._options = options
        self._pace = pace
        self._backlog = False
        super().__init__(
            "cdr drainer",
            new_rows,
            concurrency=pace.max_concurrent,
            retry_base_s=pace.retry_base_s,
            retry_cap_s=pace.retry_cap_s,
        )

    async def run_once(self) -> int:
        """Deliver one batch of whatever is due now, without pacing; return rows handled."""
        size = 1 if self._pace.direct else self._pace.batch_size
        batch = await self._take(size)
        if batch:
            await self._deliver_taken(batch)
        return len(batch)

    async def _take(self, size: int) -> list[CdrRow]:
        """The oldest due rows not already in flight, now in flight."""
        batch = await self._store.due_cdrs(size, self._in_flight)
        self._in_flight.update(row.id for row in batch)
        self._backlog = len(batch) == size
        return batch

    async def _take_next(self) -> list[CdrRow]:
        """Wait until a batch is worth sending, then take it ([] when stopping)."""
        size = 1 if self._pace.direct else self._pace.batch_size
        if self._backlog:
            # The last batch was full: more is due, so take it straight away (a short batch at
            # the end of the backlog goes early, which the force timeout allows).
            batch = await self._take(size)
            if batch:
                return batch
        while not self._stopping.is_set():
            self._new_rows.clear()
            due, oldest = await self._store.due_summary(Kind.CDR, size, self._in_flight)
            waited = age_seconds(oldest)
            if due >= size or (due and waited >= self._pace.force_timeout_s):
                return await self._take(size)
            timeout = self._pace.force_timeout_s - waited if due else self._pace.idle_poll_s
            await wait_for_event(self._new_rows, timeout)
        return []

    async def _deliver_in_slot(self, batch: list[CdrRow]) -> None:
        try:
            await self._deliver_taken(batch)
        finally:
            self._slots.release()

    async def _deliver_taken(self, batch: list[CdrRow]) -> None:
        try:
            await self.deliver(batch)
        except OutboxError as error:
            # The rows stay pending and are taken again; the API dedupes by event_id.
            log.error("cdr drainer: cannot record the outcome of %d CDRs: %s", len(batch), error)
        except Exception as error:
            # A bug in mapping or filtering must not stop delivery for good: the batch fails,
            # visibly, and `connector resend` retries it once the connector is fixed.
            log.exception("cdr drainer: cannot deliver %d CDRs", len(batch))
            detail = f"internal error: {type(error).__name__}: {error}"[:500]
            failed = dict.fromkeys((row.id for row in batch), detail)
            with contextlib.suppress(OutboxError):  # then the rows simply stay pending
                await asyncio.shield(self._store.mark_failed(Kind.CDR, failed))
        finally:
            self._in_flight.difference_update(row.id for row in batch)

    async def deliver(self, batch: Sequence[CdrRow]) -> None:
        """Filter, map and send rows taken for delivery, then settle every one of them."""
        metrics.CDRS_PROCESSED.inc(len(batch))
        items: list[Item] = []
        filtered: dict[int, str] = {}
        for row in batch:
            reason = filter_reason(row.raw, self._rules)
            if reason:
                filtered[row.id] = reason
            else:
                items.append((row.id, cdr_payload(row, self._options)))
        if filtered:
            await asyncio.shield(self._store.mark_filtered(Kind.CDR, filtered))
            for reason in filtered.values():
                metrics.CDR_FILTERED.labels(reason=reason).inc()
        # Cancelled at the shutdown deadline, the rows simply stay pending for the next start.
        await self._send(items)

    async def _send(self, items: Sequence[Item]) -> bool:
        """Post items and settle them; return False when sending must pause."""
        if not items:
            return True
        ids = [row_id for row_id, _ in items]
        try:
            await self._api.post_cdrs([payload for _, payload in items])
        except RetryLater as error:
            delay = self.gate.retry_later(error.detail, error.retry_after_s)
            await asyncio.shield(self._store.reschedule(Kind.CDR, ids, delay, error.detail))
            return False
        except AuthRefused as error:
            self.gate.auth_refused(error.detail)  # the rows stay exactly as they are
            return False
        except Rejected as error:
            return await self._isolate_rejected(items, error)
        self.gate.delivered()
        await asyncio.shield(self._store.mark_sent(Kind.CDR, ids))
        metrics.CDRS_SENT.inc(len(ids))
        return True

    async def _isolate_rejected(self, items: Sequence[Item], error: Rejected) -> bool:
        """Split a rejected batch in halves until each rejected row is alone; fail only those."""
        if len(items) == 1:
            row_id = items[0][0]
            await asyncio.shield(self._store.mark_failed(Kind.CDR, {row_id: error.detail}))
            metrics.CDRS_FAILED.inc()
            log.error("cdr #%d rejected by the API (%s); `connector resend` retries it", row_id, error.detail)
            return True
        half = len(items) // 2
        # When the first half must pause, the second stays pending, untouched, for later.
        return await self._send(items[:half]) and await self._send(items[half:])
