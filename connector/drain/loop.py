"""The loop both drainers share: take work while a slot is free and the API gate is open, deliver
each piece in a task of its own, and ride out an outbox that cannot be read without crash-looping."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

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
