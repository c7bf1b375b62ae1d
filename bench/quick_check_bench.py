"""What the integrity check costs at the start of `connector run`, on a large outbox.

    python bench/quick_check_bench.py            # 1,000,000 CDRs (~1 GB; builds for a few minutes)
    python bench/quick_check_bench.py --smoke    # 20,000 CDRs, for CI

The outbox is built as the listener builds it: Cdr events turned into rows by `new_cdr` and
committed by `Store.append_cdrs`, 500 per transaction, then closed (the WAL checkpointed). The
figure is the wall time of `check_integrity` (the read-only `PRAGMA quick_check` that `run` and
every outbox command do first), once with the file just written (in the page cache, as at a
restart) and once after asking the kernel to drop that file's cached pages (posix_fadvise
DONTNEED; as after a reboot, when the disk has to deliver every page). The smoke run also
damages a page in the middle of the file and checks that the check reports it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from connector.ami.ingest import new_cdr  # noqa: E402
from connector.errors import OutboxCorrupt  # noqa: E402
from connector.outbox.quarantine import check_integrity  # noqa: E402
from connector.outbox.store import Store  # noqa: E402

FULL_ROWS = 1_000_000
SMOKE_ROWS = 20_000
PER_TXN = 500
PAGE = 4096


def headers(n: int) -> tuple[tuple[str, str], ...]:
    """The n-th Cdr event as Asterisk sends it (cdr_manager with the recommended mappings)."""
    uniqueid = f"1795735394.{n}"
    return (
        ("Event", "Cdr"),
        ("Privilege", "cdr,all"),
        ("AccountCode", "lab-acct-200"),
        ("Source", f"{1000 + n % 900}"),
        ("Destination", "200"),
        ("DestinationContext", "lab"),
        ("CallerID", f'"Caller {n % 900}" <{1000 + n % 900}>'),
        ("Channel", f"PJSIP/{1000 + n % 900}-{n:08x}"),
        ("DestinationChannel", f"PJSIP/200-{n + 1:08x}"),
        ("LastApplication", "Dial"),
        ("LastData", "PJSIP/200,30"),
        ("StartTime", "2026-11-26 23:23:14"),
        ("AnswerTime", "2026-11-26 23:23:16"),
        ("EndTime", "2026-11-26 23:23:58"),
        ("Duration", str(44 + n % 300)),
        ("BillableSeconds", str(42 + n % 300)),
        ("Disposition", "ANSWERED"),
        ("AMAFlags", "DOCUMENTATION"),
        ("UniqueID", uniqueid),
        ("UserField", ""),
        ("LinkedID", uniqueid),
        ("Sequence", str(n)),
    )


async def build(path: Path, rows: int) -> None:
    """`rows` CDRs through the store, as the listener commits them."""
    store = await Store.open(path)
    try:
        started = time.time()
        for start in range(0, rows, PER_TXN):
            batch = range(start, min(rows, start + PER_TXN))
            await store.append_cdrs([new_cdr(headers(n), started + n / 1000) for n in batch])
    finally:
        await store.close()


def drop_cache(path: Path) -> None:
    """Ask the kernel to forget the file's cached pages (a hint; dirty pages are written first)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def timed_check(path: Path) -> float:
    """Seconds one check_integrity takes."""
    started = time.perf_counter()
    check_integrity(path)
    return time.perf_counter() - started


def damage_middle_page(path: Path) -> None:
    """Overwrite one page in the middle of the file with garbage."""
    pages = path.stat().st_size // PAGE
    with path.open("r+b") as handle:
        handle.seek(pages // 2 * PAGE)
        handle.write(bytes((i * 37 + 11) % 251 for i in range(PAGE)))


def main() -> int:
    """Build the outbox, time the check warm and cold; in smoke runs, check it catches damage."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE_ROWS:,} rows (CI)")
    parser.add_argument("--rows", type=int, help=f"rows to store (default {FULL_ROWS:,})")
    parser.add_argument("--dir", type=Path, help="where to put the outbox (default: a temp folder)")
    args = parser.parse_args()
    rows = args.rows or (SMOKE_ROWS if args.smoke else FULL_ROWS)
    folder = Path(tempfile.mkdtemp(prefix="quick-check-bench-", dir=args.dir))
    path = folder / "outbox.db"
    try:
        started = time.perf_counter()
        asyncio.run(build(path, rows))
        built_s = time.perf_counter() - started
        size_mb = path.stat().st_size / 1e6
        print(f"SQLite {sqlite3.sqlite_version}; {rows:,} CDRs, {size_mb:,.0f} MB, built in {built_s:.0f} s")
        warm = min(timed_check(path) for _ in range(3))
        drop_cache(path)
        cold = timed_check(path)
        print(f"quick_check, file in page cache   {warm:8.2f} s  ({size_mb / warm:,.0f} MB/s)")
        print(f"quick_check, cache dropped first  {cold:8.2f} s  ({size_mb / cold:,.0f} MB/s)")
        if args.smoke:
            damage_middle_page(path)
            try:
                check_integrity(path)
            except OutboxCorrupt as error:
                print(f"damaged middle page found: {error.problem}")
            else:
                print("damaged middle page NOT found")
                return 1
    finally:
        shutil.rmtree(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
