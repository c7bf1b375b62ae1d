"""Ingest benchmark: a fake AMI server floods Cdr events into a listener process.

The listener runs in a child process (AmiClient → CdrWriter → outbox with synchronous=FULL), as in
production. The parent floods N synthetic Cdr frames over TCP as fast as it can, waits until the
child reports every row committed, then counts the rows in the database itself and prints:

    CDRs/s stored durably   N / (time from the first byte sent to the last commit)
    peak RSS of the listener (VmHWM of the child, confirmed by getrusage of the waited child)

Targets on a 2-core machine: >= 20,000 CDR/s and peak RSS <= 80 MB.

    python bench/ingest_bench.py            # 100,000 frames
    python bench/ingest_bench.py --smoke    # 5,000 frames (CI)
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from connector.outbox.migrate import prepare_database

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/, not the repository, on the path
    sys.path.insert(0, str(ROOT))  # for the tests' doubles (tests/doubles/) and bench/_common.py

from bench._common import AMI_SECRET, AMI_USER, flood_chunks, status_mb  # noqa: E402

TARGET_RATE = 20_000
TARGET_RSS_MB = 80.0


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM) in MB."""
    try:
        return status_mb("self", "VmHWM")
    except (OSError, LookupError):  # no /proc
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def listener(port: int, db: Path, expect: int) -> None:
    """Child side: run the real ingest path until `expect` rows are committed."""
    from connector.ami.client import AmiClient
    from connector.ami.ingest import CdrWriter
    from connector.outbox.store import Store

    store = await Store.open(db)
    writer = CdrWriter(store)
    client = AmiClient("127.0.0.1", port, AMI_USER, AMI_SECRET, writer.on_cdr, gate=writer)
    tasks = [asyncio.create_task(client.run()), asyncio.create_task(writer.run())]
    await client.wait_connected()
    main_cpu, usage = time.thread_time(), resource.getrusage(resource.RUSAGE_SELF)
    await writer.wait_for_rows(expect)
    main_cpu = time.thread_time() - main_cpu
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - usage.ru_utime - usage.ru_stime
    done = (
        f"DONE {writer.stored} {writer.duplicates} {writer.dropped} {peak_rss_mb():.1f}"
        f" {cpu:.3f} {main_cpu:.3f}"
    )
    print(done, flush=True)
    client.close()
    writer.stop()
    await asyncio.gather(*tasks)
    await store.close()


async def flood(count: int, keep: bool, smoke: bool) -> int:
    """Parent side: start the server and the listener, flood, measure, report."""
    from connector.demo.ami_server import AmiUser
    from tests.doubles.ami_server import FakeAmiServer

    folder = Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    db = folder / "outbox.db"
    # Migrated beforehand, as on every start but the first: the listener's memory is then that of
    # a running connector, without the migration tooling it loads only to create the schema.
    prepare_database(db)
    async with FakeAmiServer({AMI_USER: AmiUser(AMI_SECRET)}) as server:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--listener",
            f"--port={server.port}",
            f"--db={db}",
            f"--expect={count}",
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        # Frames are built before the clock starts: the benchmark measures the listener.
        chunks = flood_chunks(count)
        await server.wait_for_logins(1)
        started = time.perf_counter()
        await server.send_chunks(chunks)
        sent_s = time.perf_counter() - started
        line = b""
        while not line.startswith(b"DONE"):
            line = await child.stdout.readline()
            if not line:
                raise SystemExit("listener exited before storing every CDR")
        elapsed_s = time.perf_counter() - started
        await child.wait()
    rows = sqlite3.connect(db).execute("SELECT count(*) FROM cdr").fetchone()[0]
    if not keep:
        await asyncio.to_thread(shutil.rmtree, folder)
    rate, rss_mb = report(count, rows, sent_s, elapsed_s, line.decode().split()[1:])
    if rows != count:
        return 1
    # A smoke run checks that every frame is stored; speed is only judged on a full run.
    return 0 if smoke or (rate >= TARGET_RATE and rss_mb <= TARGET_RSS_MB) else 1


def report(count: int, rows: int, sent_s: float, elapsed_s: float, child: list[str]) -> tuple[float, float]:
    """Print the figures; return the rate and the listener's peak RSS in MB."""
    stored, duplicates, dropped, child_rss, cpu, main_cpu = child
    rusage_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    rate = rows / elapsed_s
    print(f"frames written         {count:,} in {sent_s:.2f} s")
    print(f"rows in the database   {rows:,} (stored {stored}, duplicates {duplicates}, dropped {dropped})")
    print(f"CDRs/s stored durably  {rate:,.0f}  (target >= {TARGET_RATE:,})")
    print(
        f"listener CPU per CDR   {float(cpu) / count * 1e6:.1f} us in all threads,"
        f" {float(main_cpu) / count * 1e6:.1f} us in the event loop thread"
    )
    print(
        f"listener peak RSS      {float(child_rss):.1f} MB"
        f" (getrusage {rusage_mb:.1f} MB, target <= {TARGET_RSS_MB:.0f})"
    )
    return rate, float(child_rss)


def main() -> int:
    """Parse arguments and run one side of the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--smoke", action="store_true", help="5,000 frames (for CI)")
    parser.add_argument("--keep", action="store_true", help="keep the database")
    parser.add_argument("--listener", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.listener:
        asyncio.run(listener(args.port, args.db, args.expect))
        return 0
    count = 5_000 if args.smoke else args.frames
    return asyncio.run(flood(count, args.keep, args.smoke))


if __name__ == "__main__":
    sys.exit(main())
