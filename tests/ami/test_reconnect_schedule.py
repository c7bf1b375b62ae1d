"""The client's retry schedule, asserted on the waits it asks for (a simulated clock), not on sleeps.

AMI not there: a try every 0.5 s, the first at once after a session; AMI refusing us: backoff
from 1 s to 30 s. The fake AMI server is real (loopback TCP); only waiting is simulated.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from connector.ami.client import RECONNECT_INTERVAL_S, AmiClient, Attempt
from connector.demo.ami_server import AmiUser
from connector.demo.ports import free_port
from tests.ami.conftest import SECRET, USER, Running
from tests.doubles.ami_server import FakeAmiServer

WRONG = "not-the-s3cret"


class SimulatedTime:
    """The client's clock and sleep: sleeping moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay_s: float) -> None:
        self.waits.append(delay_s)
        self.now += delay_s
        await asyncio.sleep(0)


async def test_a_two_minute_refusal_is_retried_twice_a_second_and_ends_at_the_next_try(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    server = FakeAmiServer({USER: AmiUser(SECRET)}, port=port)
    time = SimulatedTime()
    outage_s = 120.0
    listening = False

    async def sleep(delay_s: float) -> None:
        nonlocal listening
        await time.sleep(delay_s)
        if time.now >= outage_s and not listening:
            listening = True
            await server.start()  # AMI accepts again from this simulated instant

    client = AmiClient("127.0.0.1", port, USER, SECRET, lambda _: None, sleep=sleep, clock=time.clock)
    running.start(client)
    try:
        await asyncio.wait_for(client.wait_connected(), 30)
        # Every wait is the interval: a try at 0, 0.5, 1.0, ... 120.0 s, the last one logged in.
        assert set(time.waits) == {RECONNECT_INTERVAL_S}
        assert time.now == outage_s
        assert server.connections == 1
        warnings = [r for r in caplog.records if "cannot reach AMI" in r.getMessage()]
        assert len(warnings) == 1 and "retrying every 0.5 s" in warnings[0].getMessage()
    finally:
        client.close()
        await server.go_down()


async def test_a_lost_session_is_retried_at_once(running: Running) -> None:
    time = SimulatedTime()
    async with FakeAmiServer({USER: AmiUser(SECRET)}) as server:
        client = AmiClient(
            "127.0.0.1", server.port, USER, SECRET, lambda _: None, sleep=time.sleep, clock=time.clock
        )
        running.start(client)
        await server.wait_for_logins(1)
        time.now += 60.0  # the session lasted a minute
        server.drop_connections()
        await server.wait_for_logins(2)
        assert time.waits == [0.0]
        # Dropped again at once: the next try waits out the rest of the interval, no tight loop.
        server.drop_connections()
        await server.wait_for_logins(3)
        assert time.waits == [0.0, RECONNECT_INTERVAL_S]
        client.close()


def test_a_connect_that_times_out_is_followed_by_the_next_try_at_once() -> None:
    client = AmiClient("127.0.0.1", 1, USER, SECRET, lambda _: None)
    # An attempt that took longer than the interval (a TCP connect timing out) is not followed by
    # a further wait: the retries stay at least once a second.
    assert client.retry_delay(Attempt.UNREACHABLE, 0, elapsed_s=1.0) == 0.0
    assert client.retry_delay(Attempt.UNREACHABLE, 0, elapsed_s=0.1) == pytest.approx(0.4)
    assert client.connect_timeout_s <= 1.0


async def test_a_refused_login_backs_off_from_1_to_30_seconds(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    time = SimulatedTime()
    async with FakeAmiServer({USER: AmiUser(SECRET)}) as server:
        client = AmiClient(
            "127.0.0.1",
            server.port,
            USER,
            WRONG,
            lambda _: None,
            sleep=time.sleep,
            clock=time.clock,
            rand=lambda: 1.0,
        )
        running.start(client)
        await server.wait_for_attempts(8)
        client.close()
    assert time.waits[:7] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    refusals = [r for r in caplog.records if "login refused" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR
    assert "backoff (up to 30 s)" in refusals[0].getMessage()
    assert WRONG not in caplog.text


def test_full_jitter_never_retries_a_refusal_within_a_second() -> None:
    client = AmiClient("127.0.0.1", 1, USER, SECRET, lambda _: None, rand=lambda: 0.0)
    assert [client.retry_delay(Attempt.REFUSED, n, 0.0) for n in (1, 2, 9)] == [1.0, 1.0, 1.0]
