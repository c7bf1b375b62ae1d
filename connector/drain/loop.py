"""What both drainers share: take work while a slot is free and the API gate is open, deliver each
piece in a task of its own, and ride out an outbox that cannot be read without crash-looping.

`SlotDrainer` holds the state that goes with it (the stop event, the wake-up event, the slots, the
rows in flight and the gate); the CDR drainer and the recording uploader say how to take and deliver.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

from connector.backoff import backoff_delay
from connector.drain.gate import MIN_DELAY_S, DeliveryGate
from connector.errors import OutboxError

log = logging.getLogger(__name__)

Work = TypeVar("Work")
OUTBOX_RETRY_CAP_S = 30.0


async def wait_for_event(event: asyncio.Event, timeout_s: float) -> None:
    """Return when `event` is set or `timeout_s` has passed, whichever comes first."""
    try:
        await asyncio.wait_for(event.wait(), timeout=max(0.0, timeout_s))
    except TimeoutError:
        pass


async def run_slots(
    name: str,
    *,
    stopping: asyncio.Event,
    gate: DeliveryGate,
    slots: asyncio.Semaphore,
    take: Callable[[], Awaitable[Work | None]],
    deliver: Callable[[Work], Coroutine[Any, Any, None]],
) -> None:
    """Take and deliver until `stopping` is set; `deliver` must release its slot when done."""
    outbox_failures = 0
    async with asyncio.TaskGroup() as deliveries:
        while not stopping.is_set():
            await gate.wait_open()
            await slots.acquire()
            try:
                work = await take()
            except OutboxError as error:
                slots.release()
                outbox_failures += 1
                delay = backoff_delay(
                    outbox_failures, base_s=MIN_DELAY_S, floor_s=MIN_DELAY_S, cap_s=OUTBOX_RETRY_CAP_S
                )
                log.error("%s: %s; retrying in %.1fs", name, error, delay)
                await wait_for_event(stopping, delay)
                continue
            outbox_failures = 0
            if not work:
                slots.release()
                continue
            deliveries.create_task(deliver(work))


class SlotDrainer(Generic[Work]):
    """The part of a drainer that does not depend on what it delivers."""

    def __init__(
        self, name: str, new_rows: asyncio.Event, *, concurrency: int, retry_base_s: float, retry_cap_s: float
    ) -> None:
        self.name = name
        self._new_rows = new_rows
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        # Rows taken for delivery and not settled yet. Only one `connector run` may own the outbox
        # (DATA_DIR lock), so this set is the whole truth: taking rows needs no write, and a crash
        # leaves nothing behind but pending rows, delivered again at the next start.
        self._in_flight: set[int] = set()
        self.gate = DeliveryGate(name, self._stopping, base_s=retry_base_s, cap_s=retry_cap_s)

    def stop(self) -> None:
        """Stop taking rows; deliveries in flight finish (the caller bounds them with a deadline)."""
        self._stopping.set()
        self._new_rows.set()

    async def run(self) -> None:
        """Take due rows and deliver them until stop() is called."""
        await run_slots(
            self.name,
            stopping=self._stopping,
            gate=self.gate,
            slots=self._slots,
            take=self._take_next,
            deliver=self._deliver_in_slot,
        )

    async def _take_next(self) -> Work | None:
        """Wait until work is worth delivering, then take it (None or empty when stopping)."""
        raise NotImplementedError

    async def _deliver_in_slot(self, work: Work) -> None:
        """Deliver `work`, settle it, and release its slot whatever happens."""
        raise NotImplementedError
