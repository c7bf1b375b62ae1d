"""The one retry backoff: exponential growth, full jitter, a floor and a cap.

Used by the AMI client (reconnects), the ingest writer (outbox writes), the drain gate and loop
(API and outbox failures) and the Master.csv follower. Attempts are numbered from 1: attempt 1 is
the first retry after one failure, and its ceiling is `base_s`; each attempt doubles the ceiling
until `cap_s`. The delay is drawn uniformly below the ceiling (full jitter spreads the retries of
many connectors after a shared outage), then held within [floor_s, cap_s].
"""

from __future__ import annotations

import random
from collections.abc import Callable

# 2.0 ** 1024 overflows; from 1023 doublings on, any positive base is past any useful cap anyway.
MAX_DOUBLINGS = 1023


def backoff_delay(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    floor_s: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Return the delay before retry `attempt` (1 = first): full jitter below base_s·2^(attempt-1)."""
    doublings = min(max(attempt - 1, 0), MAX_DOUBLINGS)
    ceiling = min(cap_s, base_s * 2.0**doublings)
    return min(cap_s, max(floor_s, rand() * ceiling))
