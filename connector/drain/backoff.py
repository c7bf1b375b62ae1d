"""Retry delays: exponential backoff with full jitter, and Retry-After when the API gives one."""

from __future__ import annotations

import random

MIN_DELAY_S = 1.0
MAX_DELAY_S = 300.0


def backoff_delay(
    failures: int,
    *,
    base_s: float = MIN_DELAY_S,
    cap_s: float = MAX_DELAY_S,
    rng: random.Random | None = None,
) -> float:
    """Delay before the next try after `failures` consecutive failures (1 → about base_s).

    Full jitter (a uniform draw below the exponential ceiling) spreads the retries of many
    connectors after a shared outage; the floor keeps a retry from ever being immediate.
    """
    ceiling = min(cap_s, base_s * 2 ** max(0, min(failures - 1, 32)))
    draw = (rng or random).uniform(0, ceiling)
    return max(base_s, draw) if ceiling > base_s else ceiling


def retry_delay(
    failures: int,
    retry_after_s: float | None,
    *,
    base_s: float = MIN_DELAY_S,
    cap_s: float = MAX_DELAY_S,
) -> float:
    """The API's Retry-After when present (capped at 5 minutes), else our own backoff."""
    if retry_after_s is not None:
        return min(MAX_DELAY_S, max(0.0, retry_after_s))
    return backoff_delay(failures, base_s=base_s, cap_s=cap_s)
