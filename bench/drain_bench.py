"""Drain benchmark: pending CDRs delivered to the loopback receiver, and direct-mode latency.

1. Throughput: N pending rows in a real outbox are delivered by the real CdrDrainer (batch mode with
   100 and 500 CDRs per request, and direct mode) to the receiver running in its own process.
   Next to each, a bare httpx loop posts the very same payloads (same batches, same concurrency)
   to the same receiver in the same run; the ratio is drainer / bare.
2. Latency: the whole pipeline as a real `connector run` process in direct mode, fed 50 Cdr frames
   a second by the fake AMI server; latency = receiver arrival time - time the frame was sent.

Targets: batch >= 10,000 CDR/s; direct-mode p99 <= 50 ms.

    python bench/drain_bench.py            # 100,000 rows (direct mode: 5,000), 20 s of latency
    python bench/drain_bench.py --smoke    # 2,000 rows, 3 s of latency (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import httpx

from connector.ami.ingest import new_cdr
from connector.ami.protocol import parse_headers
from connector.api.client import ApiClient, encode_batch, idempotency_key
from connector.cdr.filters import FilterRules
from connector.cdr.mapping import MappingOptions, cdr_payload
from connector.demo.ami_server import AmiUser
from connector.drain.cdrs import CdrDrainer, DrainSettings
from connector.outbox.records import Kind, State
from connector.outbox.store import Store

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(ROOT))  # for the tests' doubles (tests/doubles/) and bench/_common.py

from bench._common import AMI_SECRET, AMI_USER, connector_env  # noqa: E402
from tests.doubles.ami_server import FakeAmiServer, synthetic_cdr  # noqa: E402
from tests.doubles.receiver_control import ReceiverProcess  # noqa: E402

KEY = "sk_" + "b" * 32
OPTIONS = MappingOptions(zone=UTC, internal_pattern=re.compile(r"^[0-9]{2,6}$"))
NO_FILTERS = FilterRules(enabled=False)
TARGET_BATCH_RATE = 10_000
TARGET_P99_MS = 50.0


@dataclass(frozen=True)
class Sizes:
    rows: int
    direct_rows: int
    latency_s: float


async def fill(folder: Path, rows: int) -> Store:
    store = await Store.open(folder / "outbox.db")
    now = time.time()
    for first in range(0, rows, 5000):
        frames = (synthetic_cdr(n) for n in range(first, min(rows, first + 5000)))
        await store.append_cdrs([new_cdr(parse_headers(f.removesuffix(b"\r\n\r\n"))[0], now) for f in frames])
    return store


async def drainer_rate(
    folder: Path, base_url: str, rows: int, pace: DrainSettings
) -> tuple[float, list[list[dict]]]:
    """Deliver `rows` pending rows with the real drainer; return CDR/s and the batches it built."""
    await asyncio.to_thread(shutil.rmtree, folder, True)
    await asyncio.to_thread(folder.mkdir, parents=True)
    store = await fill(folder, rows)
    size = 1 if pace.direct else pace.batch_size
    batches = [
        [
            cdr_payload(row, OPTIONS)
            for row in await store.get_cdrs(list(range(first + 1, min(rows, first + size) + 1)))
        ]
        for first in range(0, rows, size)
    ]
    async with ApiClient(base_url=base_url, api_key=KEY, hostname="bench", timeout_s=30) as api:
        drainer = CdrDrainer(store, api, NO_FILTERS, OPTIONS, pace, asyncio.Event())
        started = time.perf_counter()
        task = asyncio.create_task(drainer.run())
        while (await store.stats()).tables[Kind.CDR].counts[State.SENT] < rows:
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - started
        drainer.stop()
        await task
    await store.close()
    return rows / elapsed, batches


async def bare_rate(base_url: str, batches: list[list[dict]], concurrency: int) -> float:
    """Post the same bodies with a bare httpx client, `concurrency` requests in flight."""
    headers = {
        "Authorization": f"Bearer {KEY}",
        "Content-Type": "application/json",
        "X-Asterisk-Hostname": "bench",
    }
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    queue: asyncio.Queue[list[dict]] = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            key = idempotency_key([cdr["event_id"] for cdr in batch])
            body = encode_batch(batch)
            response = await client.post(
                base_url + "/mqs/connectors/asterisk/cdr",
                content=body,
                headers={**headers, "Idempotency-Key": key},
            )
            response.raise_for_status()

    started = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    return sum(len(batch) for batch in batches) / (time.perf_counter() - started)


async def latency(folder: Path, base_url: str, receiver: ReceiverProcess, seconds: float) -> list[float]:
    """Frame sent by the fake AMI server → CDR received by the API, through `connector run`."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    receiver.control.reset()
    async with FakeAmiServer({AMI_USER: AmiUser(AMI_SECRET)}) as ami:
        env = connector_env(
            folder,
            ami.port,
            base_url,
            KEY,
            CDR_MODE="direct",
            CDR_FILTER_ENABLED="false",
            LOG_LEVEL="WARNING",
        )
        child = await asyncio.create_subprocess_exec(sys.executable, "-m", "connector", "run", env=env)
        await ami.wait_for_logins(1)
        await asyncio.sleep(1.0)  # let start-up work settle before timing
        sent: dict[str, float] = {}
        count = int(seconds * 50)
        started = time.perf_counter()
        for index in range(count):
            await asyncio.sleep(max(0.0, started + index / 50 - time.perf_counter()))
            frame = synthetic_cdr(1_000_000 + index)
            sent[f"1795700000.{1_000_000 + index}"] = time.time()
            ami.send_event(frame)
        deadline = time.monotonic() + 30
        while receiver.control.summary()["cdrs"] < count and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        received = receiver.control.received()
        child.terminate()
        await child.wait()
    arrivals = received["arrivals"]
    return [
        (arrivals[cdr["event_id"]] - sent[cdr["uniqueid"]]) * 1000
        for cdr in received["cdr_list"]
        if cdr.get("uniqueid") in sent
    ]


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def run(sizes: Sizes, smoke: bool) -> int:
    folder = Path(tempfile.mkdtemp(prefix="drain-bench-"))
    ok = True
    try:
        with ReceiverProcess(api_key=KEY) as receiver:
            print(f"receiver: {receiver.base_url} (own process)")
            modes = [
                (
                    "batch 100",
                    DrainSettings(batch_size=100, force_timeout_s=0.0, max_concurrent=4),
                    sizes.rows,
                ),
                (
                    "batch 500",
                    DrainSettings(batch_size=500, force_timeout_s=0.0, max_concurrent=4),
                    sizes.rows,
                ),
                ("direct", DrainSettings(direct=True, max_concurrent=4), sizes.direct_rows),
            ]
            for name, pace, rows in modes:
                receiver.control.reset()
                ours, batches = await drainer_rate(
                    folder / name.replace(" ", "-"), receiver.base_url, rows, pace
                )
                receiver.control.reset()
                bare = await bare_rate(receiver.base_url, batches, pace.max_concurrent)
                print(
                    f"{name:10s} {rows:>7,} CDRs  drainer {ours:>9,.0f} CDR/s"
                    f"   bare httpx {bare:>9,.0f} CDR/s   ratio {ours / bare:5.0%}"
                )
                if name.startswith("batch") and ours < TARGET_BATCH_RATE:
                    ok = False
            values = await latency(folder / "latency", receiver.base_url, receiver, sizes.latency_s)
            p50, p99 = percentile(values, 0.50), percentile(values, 0.99)
            print(
                f"direct-mode latency, AMI frame -> API, at 50 CDR/s for {sizes.latency_s:g} s: "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(values):.1f} ms over {len(values)} CDRs "
                f"(targets: batch >= {TARGET_BATCH_RATE:,} CDR/s, p99 <= {TARGET_P99_MS:g} ms)"
            )
            if len(values) < int(sizes.latency_s * 50):
                print("some CDRs did not arrive")
                return 1
            ok = ok and p99 <= TARGET_P99_MS
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    # A smoke run checks that everything is delivered; speed is judged on a full run only.
    return 0 if smoke or ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="small sizes, for CI")
    args = parser.parse_args()
    sizes = Sizes(2_000, 500, 3.0) if args.smoke else Sizes(100_000, 5_000, 20.0)
    return asyncio.run(run(sizes, args.smoke))


if __name__ == "__main__":
    raise SystemExit(main())
