"""A year in minutes: 365 simulated days of 10,000 CDRs a day through the real outbox and its retention.

Every simulated hour: that hour's CDRs are appended (real Cdr frames made into rows by new_cdr, as
the ingest writer does), delivered by the real CdrDrainer to the loopback receiver (its own
process), then the retention pass of `connector run` runs with the defaults (OUTBOX_RETENTION_DAYS=7,
OUTBOX_MAX_MB=1024). The clock is simulated (connector.timeutil.set_clock): nothing sleeps.

Printed at days 7, 30, 90 and 365: the outbox's size on disk (file + WAL), the rows it holds, this
process's RSS; the per-row drain cost (take, post, mark sent) of days 7 and 365; the longest single
write transaction of any pass (what ingest may wait for) and the WAL's largest size.

Targets: size after day 7 flat within +-15%, RSS flat, drain cost day 365 / day 7 <= 1.2.

    python bench/year_bench.py           # 365 days x 10,000 CDRs
    python bench/year_bench.py --smoke   # 30 days x 300 CDRs (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connector.ami.ingest import new_cdr
from connector.ami.protocol import parse_headers
from connector.api.client import ApiClient
from connector.cdr.filters import FilterRules
from connector.cdr.mapping import MappingOptions
from connector.drain.cdrs import CdrDrainer, DrainSettings
from connector.outbox.records import Kind, State
from connector.outbox.retention import PassReport, RetentionPass, RetentionSettings
from connector.outbox.store import Store
from connector.timeutil import set_clock

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(ROOT))  # for the tests' doubles (tests/doubles/) and bench/_common.py

from bench._common import status_mb  # noqa: E402
from tests.doubles.ami_server import synthetic_cdr  # noqa: E402
from tests.doubles.receiver_control import ReceiverProcess  # noqa: E402

KEY = "sk_" + "y" * 32
START = datetime(2026, 1, 1, tzinfo=UTC)
CHECKPOINTS = (7, 30, 90, 365)
DRAIN = DrainSettings(batch_size=500, force_timeout_s=0.0)
TARGET_SIZE_SPREAD = 0.15
TARGET_COST_RATIO = 1.2


class SimulatedClock:
    """The store's `now`: moved forward by the benchmark, never by waiting."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Day:
    """What one simulated day measured."""

    size_bytes: int
    rows: int
    rss_mb: float
    drain_s: float
    delivered: int

    @property
    def cost_us(self) -> float:
        return self.drain_s / self.delivered * 1e6


@dataclass
class Totals:
    """Across the whole run."""

    longest_write_s: float = 0.0
    longest_on_day: int = 0
    wal_max_bytes: int = 0
    purged: int = 0
    pass_s: list[float] = field(default_factory=list)
    pass_write_s: list[float] = field(default_factory=list)  # each pass's longest write
    append_s: list[float] = field(default_factory=list)  # each hour's append (ingest's own commit)

    def note(self, day: int, report: PassReport, elapsed_s: float) -> None:
        if report.longest_write_s > self.longest_write_s:
            self.longest_write_s, self.longest_on_day = report.longest_write_s, day
        self.wal_max_bytes = max(self.wal_max_bytes, report.space.wal_bytes)
        self.purged += report.purged
        self.pass_s.append(elapsed_s)
        self.pass_write_s.append(report.longest_write_s)


def disk_bytes(path: Path) -> int:
    """The outbox on disk: the file and its WAL (what outbox_db_bytes reports)."""
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


async def append_hour(store: Store, first: int, count: int, moment: datetime) -> float:
    """Append one hour's CDRs in one transaction; return how long the commit took."""
    timestamp = moment.timestamp()
    frames = (synthetic_cdr(n).removesuffix(b"\r\n\r\n") for n in range(first, first + count))
    rows = [new_cdr(parse_headers(frame)[0], timestamp) for frame in frames]
    started = time.perf_counter()
    await store.append_cdrs(rows)
    return time.perf_counter() - started


async def deliver_all(drainer: CdrDrainer) -> int:
    """Deliver everything due, one batch after the other; return how many rows."""
    delivered = 0
    while handled := await drainer.run_once():
        delivered += handled
    return delivered


async def simulate_day(
    day: int, per_day: int, store: Store, drainer: CdrDrainer, retention: RetentionPass,
    clock: SimulatedClock, totals: Totals,
) -> Day:  # fmt: skip
    drain_s = 0.0
    delivered = 0
    for hour in range(24):
        clock.now = START + timedelta(days=day, hours=hour)
        first = day * per_day + hour * per_day // 24
        count = day * per_day + (hour + 1) * per_day // 24 - first
        totals.append_s.append(await append_hour(store, first, count, clock.now))
        clock.now += timedelta(minutes=1)
        started = time.perf_counter()
        delivered += await deliver_all(drainer)
        drain_s += time.perf_counter() - started
        clock.now += timedelta(minutes=1)
        started = time.perf_counter()
        report = await retention.run_once()
        totals.note(day, report, time.perf_counter() - started)
    stats = await store.stats(recent_failures=0)
    cdr = stats.tables[Kind.CDR]
    if cdr.counts[State.PENDING] or delivered != per_day:
        raise RuntimeError(f"day {day}: {delivered} of {per_day} delivered, {cdr.counts[State.PENDING]} left")
    return Day(
        disk_bytes(store.path), sum(cdr.counts.values()), status_mb("self", "VmRSS"), drain_s, delivered
    )


def tail(values: list[float]) -> str:
    """Median, 99th and 99.9th percentile, and maximum, in ms."""
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] * 1000

    return (
        f"median {at(0.5):.1f} ms, p99 {at(0.99):.1f} ms, p99.9 {at(0.999):.1f} ms,"
        f" max {ordered[-1] * 1000:.1f} ms"
    )


def report_lines(days: dict[int, Day], totals: Totals, per_day: int) -> tuple[list[str], bool]:
    """The printed figures, and whether the targets are met."""
    lines = [f"{'day':>4} {'size on disk':>13} {'rows held':>10} {'RSS':>8} {'drain µs/row':>13}"]
    marks = [day for day in CHECKPOINTS if day in days]
    for day in marks:
        d = days[day]
        lines.append(
            f"{day:>4} {d.size_bytes / 2**20:>10.1f} MB {d.rows:>10,} {d.rss_mb:>5.0f} MB {d.cost_us:>13.1f}"
        )
    last = max(days)
    after = [d.size_bytes for day, d in days.items() if day >= 7]
    base = days[7].size_bytes
    spread = max(abs(size - base) / base for size in after)
    rss = [d.rss_mb for day, d in days.items() if day >= 7]
    first_cost, last_cost = days[7].cost_us, days[last].cost_us
    week = [days[day].cost_us for day in range(1, 8)]
    last_week = [days[day].cost_us for day in range(last - 6, last + 1)]
    ratio = last_cost / first_cost
    week_ratio = statistics.median(last_week) / statistics.median(week)
    passes = sorted(totals.pass_s)
    lines += [
        f"size from day 7 to day {last}: within {spread:+.1%} of day 7 ({base / 2**20:.1f} MB)"
        f" (target +-{TARGET_SIZE_SPREAD:.0%});"
        f" RSS {min(rss):.0f}-{max(rss):.0f} MB",
        f"drain cost per row: day 7 {first_cost:.1f} µs, day {last} {last_cost:.1f} µs, ratio {ratio:.2f};"
        f" week medians {statistics.median(week):.1f} / {statistics.median(last_week):.1f} µs,"
        f" ratio {week_ratio:.2f} (target <= {TARGET_COST_RATIO})",
        f"retention: {len(passes):,} passes (one per simulated hour), {totals.purged:,} rows purged;"
        f" a pass takes median {statistics.median(passes) * 1000:.1f} ms, max {passes[-1] * 1000:.1f} ms;"
        f" largest WAL {totals.wal_max_bytes / 2**20:.1f} MB",
        f"longest write transaction of a pass (what ingest may wait for): {tail(totals.pass_write_s)};"
        f" max {totals.longest_write_s * 1000:.1f} ms on day {totals.longest_on_day}",
        f"for comparison, ingest's own commit of an hour's CDRs: {tail(totals.append_s)}",
        f"({per_day:,} CDRs a day, {per_day * (last + 1):,} in all)",
    ]
    ok = spread <= TARGET_SIZE_SPREAD and ratio <= TARGET_COST_RATIO and max(rss) <= min(rss) * 1.15
    return lines, ok


async def run(days_total: int, per_day: int) -> tuple[list[str], bool]:
    folder = Path(tempfile.mkdtemp(prefix="year-bench-"))
    clock = SimulatedClock()
    set_clock(clock)
    try:
        with ReceiverProcess(api_key=KEY) as receiver:
            store = await Store.open(folder / "outbox.db")
            options = MappingOptions(zone=UTC, internal_pattern=re.compile(r"^[0-9]{2,6}$"))
            async with ApiClient(
                base_url=receiver.base_url, api_key=KEY, hostname="bench", timeout_s=30
            ) as api:
                drainer = CdrDrainer(store, api, FilterRules(enabled=False), options, DRAIN, asyncio.Event())
                retention = RetentionPass(
                    store, RetentionSettings(retention_s=7 * 86400.0, max_bytes=1024 * 2**20)
                )
                totals = Totals()
                days: dict[int, Day] = {}
                started = time.perf_counter()
                for day in range(days_total + 1):
                    days[day] = await simulate_day(day, per_day, store, drainer, retention, clock, totals)
                    receiver.control.reset()  # the receiver keeps what it got: forget each day's
                    if day in CHECKPOINTS:
                        d = days[day]
                        print(
                            f"  day {day}: {d.size_bytes / 2**20:.1f} MB,"
                            f" {time.perf_counter() - started:.0f} s"
                        )
            await store.close()
        return report_lines(days, totals, per_day)
    finally:
        set_clock(None)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="30 days of 300 CDRs, for CI")
    parser.add_argument("--days", type=int, help="simulated days (default 365; smoke 30)")
    parser.add_argument("--per-day", type=int, help="CDRs a day (default 10,000; smoke 300)")
    args = parser.parse_args()
    days = args.days or (30 if args.smoke else 365)
    per_day = args.per_day or (300 if args.smoke else 10_000)
    lines, ok = asyncio.run(run(days, per_day))
    print("\n".join(lines))
    # A smoke run checks that every day is delivered and purged; figures are judged on a full run.
    return 0 if args.smoke or ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
