"""Crash safety: SIGKILL the follower at random moments while Asterisk keeps appending lines.

Afterwards every line must be stored exactly once: the position saved with the rows means a
restart neither skips a line nor stores one twice, and byte-identical (ForkCDR) lines keep their
occurrence numbers across restarts.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from connector.backfill.follower import CsvFollower
from connector.backfill.lines import check_layout
from connector.outbox.store import Store
from tests.backfill.helpers import append, csv_line

CHILD = Path(__file__).with_name("follow_child.py")
KILLS = 10
MAX_RUN_S = 0.4


class Asterisk:
    """Appends CDR lines like cdr_csv: sometimes in two writes, sometimes ForkCDR twins."""

    def __init__(self, path: Path, rng: random.Random) -> None:
        self.path, self.rng = path, rng
        self.written: Counter[str] = Counter()
        self.next = 1

    def burst(self) -> None:
        data = b""
        for _ in range(self.rng.choice((1, 1, 3, 10, 60))):
            copies = self.rng.choice((1,) * 12 + (2, 3))
            data += csv_line(self.next) * copies
            self.written[f"1795800000.{self.next}"] += copies
            self.next += 1
        cut = self.rng.randrange(len(data))  # a write cut in two: the follower may see half a line
        append(self.path, data[:cut])
        append(self.path, data[cut:])


def run_and_kill(outbox: Path, asterisk: Asterisk, rng: random.Random) -> None:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(outbox), str(asterisk.path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    if first != "ready\n":
        child.kill()
        child.wait()
        raise AssertionError(f"the follower did not start: {first!r} {child.stderr.read()}")
    stop_at = time.monotonic() + rng.uniform(0, MAX_RUN_S)
    while time.monotonic() < stop_at:
        asterisk.burst()
        time.sleep(rng.uniform(0, 0.01))
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    errors = child.stderr.read()
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL, errors


async def catch_up(outbox: Path, csv_path: Path) -> None:
    store = await Store.open(outbox)
    follower = CsvFollower(store, csv_path, check_layout("csv"), start="start", grace_s=0.0)
    try:
        while await follower.run_once():
            pass
    finally:
        follower.close()
        await store.close()


def test_sigkill_at_random_moments_stores_every_line_once(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CRASH_SEED", "8")))
    outbox, master = tmp_path / "outbox.db", tmp_path / "Master.csv"
    master.write_bytes(b"")
    asterisk = Asterisk(master, rng)

    for _ in range(KILLS):
        run_and_kill(outbox, asterisk, rng)
        asterisk.burst()  # calls that end while the connector is down
    asyncio.run(catch_up(outbox, master))

    with sqlite3.connect(outbox) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = db.execute("SELECT uniqueid, dedupe_key FROM cdr").fetchall()
        line = db.execute("SELECT line FROM csv_position").fetchone()[0]
    db.close()
    assert Counter(uniqueid for uniqueid, _ in stored) == asterisk.written
    assert line == sum(asterisk.written.values())
    assert sorted(int(key.split("#")[1]) for _, key in stored) == sorted(
        n for copies in asterisk.written.values() for n in range(1, copies + 1)
    )
