"""The one backoff function: floor, cap, doubling ceiling, full jitter, any attempt number."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from connector.backoff import backoff_delay

seconds = st.floats(min_value=0.0, max_value=1e4, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=1e-3, max_value=1e4, allow_nan=False, allow_infinity=False)
attempts = st.integers(min_value=-10, max_value=10**12)
draws = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(attempt=attempts, base=seconds, floor=seconds, cap=seconds, draw=draws)
def test_never_below_the_floor_unless_it_is_past_the_cap(
    attempt: int, base: float, floor: float, cap: float, draw: float
) -> None:
    delay = backoff_delay(attempt, base_s=base, floor_s=floor, cap_s=cap, rand=lambda: draw)
    assert delay >= min(floor, cap)
    if floor >= cap:
        assert delay == cap


@given(attempt=attempts, base=seconds, floor=seconds, cap=seconds, draw=draws)
def test_never_above_the_cap(attempt: int, base: float, floor: float, cap: float, draw: float) -> None:
    assert backoff_delay(attempt, base_s=base, floor_s=floor, cap_s=cap, rand=lambda: draw) <= cap


@given(attempt=st.integers(min_value=1, max_value=200), base=positive, cap=positive)
def test_the_ceiling_doubles_per_attempt_until_the_cap(attempt: int, base: float, cap: float) -> None:
    def ceiling(n: int) -> float:
        return backoff_delay(n, base_s=base, cap_s=cap, rand=lambda: 1.0)

    assert ceiling(1) == min(base, cap)
    assert ceiling(attempt + 1) == min(cap, 2 * ceiling(attempt))


@given(attempt=attempts, base=seconds, cap=seconds, draw=draws)
def test_the_draw_is_uniform_below_the_ceiling(attempt: int, base: float, cap: float, draw: float) -> None:
    ceiling = backoff_delay(attempt, base_s=base, cap_s=cap, rand=lambda: 1.0)
    assert backoff_delay(attempt, base_s=base, cap_s=cap, rand=lambda: draw) == draw * ceiling


@given(seed=st.integers(), base=positive, floor=seconds, cap=positive)
def test_a_seeded_rng_gives_the_same_delays(seed: int, base: float, floor: float, cap: float) -> None:
    def delays() -> list[float]:
        rand = random.Random(seed).random
        return [backoff_delay(n, base_s=base, floor_s=floor, cap_s=cap, rand=rand) for n in range(1, 20)]

    assert delays() == delays()


def test_huge_attempt_numbers_do_not_overflow() -> None:
    for attempt in (1023, 1024, 1025, 10**6, 10**100):
        assert backoff_delay(attempt, base_s=1.0, cap_s=30.0, rand=lambda: 1.0) == 30.0
        assert backoff_delay(attempt, base_s=1e300, cap_s=30.0, rand=lambda: 0.5) == 15.0


def test_attempts_before_the_first_count_as_the_first() -> None:
    assert backoff_delay(0, base_s=2.0, cap_s=30.0, rand=lambda: 1.0) == 2.0
    assert backoff_delay(-5, base_s=2.0, cap_s=30.0, rand=lambda: 1.0) == 2.0


def test_full_jitter_capped_as_the_ami_client_uses_it() -> None:
    # Moved from tests/ami (its own backoff_delay counted attempts from 0; here from 1).
    assert backoff_delay(1, base_s=1.0, cap_s=30.0, rand=lambda: 1.0) == 1.0
    assert backoff_delay(4, base_s=1.0, cap_s=30.0, rand=lambda: 1.0) == 8.0
    assert backoff_delay(11, base_s=1.0, cap_s=30.0, rand=lambda: 1.0) == 30.0
    assert backoff_delay(501, base_s=1.0, cap_s=30.0, rand=lambda: 0.5) == 15.0
    assert backoff_delay(5, base_s=1.0, cap_s=30.0, rand=lambda: 0.0) == 0.0


def test_the_drainers_floor_keeps_a_retry_from_being_immediate() -> None:
    assert backoff_delay(5, base_s=1.0, floor_s=1.0, cap_s=300.0, rand=lambda: 0.0) == 1.0
    assert backoff_delay(1, base_s=1.0, floor_s=1.0, cap_s=300.0, rand=lambda: 0.9) == 1.0
    assert backoff_delay(3, base_s=1.0, floor_s=1.0, cap_s=300.0, rand=lambda: 0.5) == 2.0
