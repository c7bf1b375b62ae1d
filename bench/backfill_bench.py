"""Backfill benchmark: import a large Master.csv into an outbox that already holds most of its CDRs.

The parent writes an N-line Master.csv (realistic cdr_csv lines, about 1 % ForkCDR twins written
as byte-identical adjacent lines) and stores 90 % of its CDRs first as AMI rows (through
`new_cdr` and `Store.append_cdrs`, as the listener does). It then runs the one-off import path
(`connector backfill`'s handler) in a child process and prints:

    lines/s       lines read / the import's own elapsed time (startup excluded)
    peak RSS      of the importing child (VmHWM, confirmed by getrusage of the waited child)
    parse only    lines/s of reading + parsing + identity alone, for comparison with the store

Targets: >= 50,000 lines/s checked against existing rows, peak RSS <= 100 MB.

    python bench/backfill_bench.py            # 1,000,000 lines
    python bench/backfill_bench.py --smoke    # 20,000 lines (CI: checks the counts, not the targets)
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import os
import random
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

TARGET_RATE = 50_000
TARGET_RSS_MB = 100.0
STORED_SHARE = 0.9
FORK_SHARE = 0.01
BATCH = 5_000

# (CSV column, AMI header) in cdr_csv's order (loguniqueid=yes, loguserfield=yes).
COLUMNS = (
    ("accountcode", "AccountCode"),
    ("src", "Source"),
    ("dst", "Destination"),
    ("dcontext", "DestinationContext"),
    ("clid", "CallerID"),
    ("channel", "Channel"),
    ("dstchannel", "DestinationChannel"),
    ("lastapp", "LastApplication"),
    ("lastdata", "LastData"),
    ("start", "StartTime"),
    ("answer", "AnswerTime"),
    ("end", "EndTime"),
    ("duration", "Duration"),
    ("billsec", "BillableSeconds"),
    ("disposition", "Disposition"),
    ("amaflags", "AMAFlags"),
    ("uniqueid", "UniqueID"),
    ("userfield", "UserField"),
)
NAMES = ("Alice", "Bob", "Carol", "Dave", "Eve", "Mallory", "Trent", "Peggy")


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def clock(seconds: int) -> str:
    """A PBX-local time `seconds` after 2026-11-01 00:00:00."""
    day, rest = divmod(seconds, 86400)
    hour, rest = divmod(rest, 3600)
    return f"2026-11-{1 + day % 28:02d} {hour:02d}:{rest // 60:02d}:{rest % 60:02d}"


def cdr_values(n: int, rng: random.Random) -> list[str | int]:
    """The 18 cdr_csv values of the n-th synthetic CDR."""
    caller = 1000 + rng.randrange(200)
    callee = 100 + rng.randrange(50)
    start_s = n * 2
    answered = rng.random() < 0.7
    billsec = rng.randrange(1, 600) if answered else 0
    ring = rng.randrange(0, 20)
    disposition = "ANSWERED" if answered else rng.choice(("NO ANSWER", "BUSY", "FAILED"))
    return [
        rng.choice(("", "", "sales", "support")),
        str(caller),
        str(callee),
        "from-internal",
        f'"{rng.choice(NAMES)}" <{caller}>',
        f"PJSIP/{caller}-{n:08x}",
        f"PJSIP/{callee}-{n + 1:08x}",
        "Dial",
        f"PJSIP/{callee},30,tT",
        clock(start_s),
        clock(start_s + ring) if answered else "",
        clock(start_s + ring + billsec),
        ring + billsec,
        billsec,
        disposition,
        "DOCUMENTATION",
        f"1795700000.{n}",
        rng.choice(("", "", "", "campaign=autumn")),
    ]


def ami_headers(values: list[str | int], sequence: int) -> tuple[tuple[str, str], ...]:
    """The Cdr event Asterisk sends for the same CDR (with the recommended extra mappings)."""
    fields = [(header, str(value)) for (_, header), value in zip(COLUMNS, values, strict=True)]
    extra = [("LinkedID", str(values[16])), ("Sequence", str(sequence)), ("PeerAccount", "")]
    return (("Event", "Cdr"), ("Privilege", "cdr,all"), *fields, *extra)


def generate(count: int, seed: int) -> Iterator[tuple[list[str | int], int, bool]]:
    """Yield (values, copies, stored over AMI) until `count` lines are produced."""
    rng = random.Random(seed)
    lines = n = 0
    while lines < count:
        copies = min(2 if rng.random() < FORK_SHARE else 1, count - lines)
        yield cdr_values(n, rng), copies, rng.random() < STORED_SHARE
        lines += copies
        n += 1


async def prepare(folder: Path, count: int, seed: int) -> tuple[Path, int, int]:
    """Write Master.csv and store the AMI share; return (csv path, lines, AMI rows stored)."""
    from connector.ami.ingest import new_cdr
    from connector.outbox.store import Store

    master = folder / "Master.csv"
    store = await Store.open(folder / "outbox.db")
    stored = 0
    batch = []
    with master.open("w", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
        for values, copies, over_ami in generate(count, seed):
            for sequence in range(copies):
                writer.writerow(values)
                if over_ami:
                    batch.append(new_cdr(ami_headers(values, sequence), time.time()))
            if len(batch) >= BATCH:
                stored += await store.append_cdrs(batch)
                batch = []
    stored += await store.append_cdrs(batch)
    await store.close()
    return master, count, stored


def parse_only_rate(master: Path, limit: int) -> float:
    """Lines/s of reading, parsing and hashing alone (no store), over the first `limit` lines."""
    from connector.backfill.lines import LineParser, OccurrenceWindow, check_layout
    from connector.backfill.tail import complete_lines

    parser, window = LineParser(check_layout("csv")), OccurrenceWindow()
    lines = offset = 0
    started = time.perf_counter()
    with master.open("rb") as handle:
        size = handle.seek(0, 2)
        while lines < limit:
            batch, offset = complete_lines(handle, offset, size)
            if not batch:
                break
            parser.parse(batch, lines + 1, window, "2026-01-01T00:00:00.000000Z")
            lines += len(batch)
    return lines / (time.perf_counter() - started)


def child(master: Path) -> int:
    """Child side: run the one-off import exactly as `connector backfill` does."""
    from connector.backfill.command import add_backfill_parser

    parser = argparse.ArgumentParser(prog="connector")
    add_backfill_parser(parser.add_subparsers())
    args = parser.parse_args(["backfill", "--file", str(master), "--from", "start"])
    code = int(args.handler(args))
    print(f"RSS {peak_rss_mb():.1f}", flush=True)
    return code


def run(count: int, seed: int, keep: bool, smoke: bool = False) -> int:
    """Parent side: prepare, import in a child, check and report."""
    folder = Path(tempfile.mkdtemp(prefix="backfill-bench-"))
    started = time.perf_counter()
    master, lines, stored = asyncio.run(prepare(folder, count, seed))
    print(
        f"prepared               {lines:,} lines ({master.stat().st_size / 1e6:,.0f} MB), "
        f"{stored:,} stored as AMI rows first, in {time.perf_counter() - started:.1f} s"
    )
    result = subprocess.run(
        [sys.executable, __file__, "--child", str(master)],
        env=os.environ | {"DATA_DIR": str(folder)},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        print(result.stdout, result.stderr, file=sys.stderr)
        return 1
    out = result.stdout
    rate = float(re.search(r"\(([0-9,.]+) lines/s\)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
    counts = {
        label: int(re.search(rf"{label}\s+([0-9,]+)", out).group(1).replace(",", ""))  # type: ignore[union-attr]
        for label in ("already known", "recovered", "malformed")
    }
    child_rss = float(re.search(r"RSS ([0-9.]+)", out).group(1))  # type: ignore[union-attr]
    rusage_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with sqlite3.connect(folder / "outbox.db") as db:
        rows = db.execute("SELECT count(*) FROM cdr").fetchone()[0]
    parse_rate = parse_only_rate(master, min(count, 200_000))
    print(f"imported               {out.splitlines()[0]}")
    print(f"  already known        {counts['already known']:,} (expected {stored:,})")
    print(f"  recovered            {counts['recovered']:,} (expected {lines - stored:,})")
    print(f"  malformed            {counts['malformed']:,}")
    print(f"rows in the database   {rows:,} (expected {lines:,})")
    print(f"lines/s                {rate:,.0f}  (target >= {TARGET_RATE:,})")
    print(f"parse only             {parse_rate:,.0f} lines/s (read, parse, identity; no store)")
    print(
        f"peak RSS               {child_rss:.1f} MB"
        f" (getrusage {rusage_mb:.1f} MB, target <= {TARGET_RSS_MB:.0f})"
    )
    if not keep:
        shutil.rmtree(folder)
    else:
        print(f"kept                   {folder}")
    correct = rows == lines and counts["already known"] == stored and counts["malformed"] == 0
    on_target = rate >= TARGET_RATE and child_rss <= TARGET_RSS_MB
    # A smoke run checks that the import is right; speed and memory are only judged on a full run.
    return 0 if correct and (smoke or on_target) else 1


def main() -> int:
    """Parse arguments and run one side of the benchmark."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--smoke", action="store_true", help="20,000 lines (for CI)")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the files")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child)
    return run(20_000 if args.smoke else args.lines, args.seed, args.keep, args.smoke)


if __name__ == "__main__":
    sys.exit(main())
