"""How long the connector is away from AMI: the real AmiClient against the fake AMI server on loopback.

    python bench/ami_reconnect_bench.py           # 20 runs per refusal length, 3 real and 3 silent-link runs
    python bench/ami_reconnect_bench.py --smoke   # 3 runs per refusal length, 1 real and 1 silent-link run

Refusals of 5 s, 20 s and 120 s are simulated: the client's clock and sleep are the benchmark's
(the client takes both as arguments), so a two-minute outage passes in milliseconds, while every
connection attempt is a real TCP connect to a closed port on loopback. AMI starts accepting again
at a random instant; the figure is the time from that instant to a logged-in session: the
simulated wait until the client's next attempt, plus the real time of the connect and the login.
A 2 s refusal run on the real clock checks the simulation. The silent-link figure is real time:
the server stops answering (a half-open link: TCP up, nothing comes back) and the clock runs until
a new session is logged in, with the default keepalive (Ping every 2.5 s, 5 s to answer).

Target: back <= 1 s after AMI accepts again, whatever the outage's length; a half-open link
found and replaced within 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench._common import AMI_SECRET, AMI_USER  # noqa: E402
from connector.ami.client import PING_INTERVAL_S, PING_TIMEOUT_S, AmiClient  # noqa: E402
from connector.demo.ami_server import AmiUser  # noqa: E402
from connector.demo.ports import free_port  # noqa: E402
from tests.doubles.ami_server import FakeAmiServer  # noqa: E402

TARGET_BACK_S = 1.0
TARGET_HALF_OPEN_S = 10.0
USERS = {AMI_USER: AmiUser(AMI_SECRET)}


async def simulated_refusal(outage_s: float) -> float:
    """Seconds from AMI accepting again (at simulated `outage_s`) to a logged-in session."""
    port = free_port()
    server = FakeAmiServer(USERS, port=port)
    now = 0.0
    accepting_at: float | None = None
    real_start = 0.0

    async def sleep(delay_s: float) -> None:
        nonlocal now, accepting_at, real_start
        now += delay_s
        if accepting_at is None and now >= outage_s:
            await server.start()
            accepting_at = outage_s
            real_start = time.perf_counter()
        await asyncio.sleep(0)

    client = AmiClient(
        "127.0.0.1", port, AMI_USER, AMI_SECRET, lambda _: None, sleep=sleep, clock=lambda: now
    )
    task = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.wait_connected(), 60)
        assert accepting_at is not None
        return (now - accepting_at) + (time.perf_counter() - real_start)
    finally:
        client.close()
        await task
        await server.go_down()


async def real_refusal(outage_s: float) -> float:
    """The same on the real clock: AMI down for `outage_s`, then the time to a session."""
    port = free_port()
    client = AmiClient("127.0.0.1", port, AMI_USER, AMI_SECRET, lambda _: None)
    task = asyncio.create_task(client.run())
    server = FakeAmiServer(USERS, port=port)
    try:
        await asyncio.sleep(outage_s)
        await server.start()
        accepting = time.perf_counter()
        await asyncio.wait_for(client.wait_connected(), 30)
        return time.perf_counter() - accepting
    finally:
        client.close()
        await task
        await server.go_down()


async def silent_link() -> float:
    """Seconds from the link going silent to a new logged-in session (default keepalive)."""
    async with FakeAmiServer(USERS) as server:
        client = AmiClient("127.0.0.1", server.port, AMI_USER, AMI_SECRET, lambda _: None)
        task = asyncio.create_task(client.run())
        try:
            await server.wait_for_logins(1)
            await asyncio.sleep(random.uniform(0, PING_INTERVAL_S))  # any phase of the ping cycle
            server.answer_pings = False
            silent = time.perf_counter()
            await server.wait_for_logins(2)
            server.answer_pings = True
            return time.perf_counter() - silent
        finally:
            client.close()
            await task


def line(label: str, figures: list[float], target: float) -> bool:
    worst = max(figures)
    verdict = "met" if worst <= target else "NOT MET"
    print(
        f"{label:<58} median {statistics.median(figures) * 1000:7.1f} ms   worst {worst * 1000:7.1f} ms"
        f"   ({len(figures)} runs; target <= {target:g} s: {verdict})"
    )
    return worst <= target


async def main(runs: int, real_runs: int, silent_runs: int) -> int:
    met = True
    for outage_s in (5.0, 20.0, 120.0):
        figures = [await simulated_refusal(outage_s + random.uniform(0, 1)) for _ in range(runs)]
        met &= line(f"after a {outage_s:g} s refusal (simulated)", figures, TARGET_BACK_S)
    figures = [await real_refusal(2.0 + random.uniform(0, 0.5)) for _ in range(real_runs)]
    met &= line("after a 2 s refusal (real clock)", figures, TARGET_BACK_S)
    figures = [await silent_link() for _ in range(silent_runs)]
    keepalive = f"Ping every {PING_INTERVAL_S:g} s, {PING_TIMEOUT_S:g} s to answer"
    met &= line(f"silent link to new session ({keepalive})", figures, TARGET_HALF_OPEN_S)
    return 0 if met else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="few runs, for CI")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the client's retry lines are not the figures
    sys.exit(asyncio.run(main(*((3, 1, 1) if args.smoke else (20, 3, 3)))))
