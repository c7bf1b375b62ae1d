"""Crash safety: SIGKILL a writer at random moments; every append that returned must survive."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from connector.outbox.records import Kind, State
from connector.outbox.store import Store
from tests.conftest import build_cdr

WRITER = Path(__file__).with_name("crash_writer.py")
KILLS = 20
MAX_DELAY_S = 0.3


@dataclass
class Reported:
    """What the writers said: batches they tried, and batches whose append had returned."""

    tried: list[tuple[int, int, int]] = field(default_factory=list)
    committed: list[tuple[int, int, int]] = field(default_factory=list)


def _spawn(path: Path, run: int, seed: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(path), str(run), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_at_random(path: Path, run: int, rng: random.Random) -> list[str]:
    """Start a writer, wait until it has opened the store, kill it a random moment later."""
    writer = _spawn(path, run, rng.randrange(2**32))
    assert writer.stdout is not None and writer.stderr is not None
    first = writer.stdout.readline()
    if first != "ready\n":
        writer.kill()
        writer.wait()
        raise AssertionError(f"writer {run} did not start: {first!r} {writer.stderr.read()}")
    time.sleep(rng.uniform(0, MAX_DELAY_S))
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL, writer.stderr.read()
    rest = writer.stdout.read()
    writer.stdout.close()
    writer.stderr.close()
    # A line cut short by the kill says nothing; only whole lines count.
    return [line for line in rest.splitlines(keepends=True) if line.endswith("\n")]


def _record(lines: list[str], reported: Reported) -> None:
    for line in lines:
        word, run, first, last = line.split()
        batch = (int(run), int(first), int(last))
        (reported.committed if word == "ok" else reported.tried).append(batch)


def _identities(batch: tuple[int, int, int]) -> set[str]:
    run, first, last = batch
    return {f"{run}-{n}" for n in range(first, last + 1)}


def _check_file(path: Path, reported: Reported, context: str) -> int:
    """Integrity ok, every committed batch whole, every tried batch all-or-nothing; return row count."""
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)], context
        stored = [row[0] for row in db.execute("SELECT identity FROM cdr")]
    db.close()
    present = set(stored)
    assert len(present) == len(stored), f"{context}: a row was stored twice"
    for batch in reported.committed:
        missing = _identities(batch) - present
        assert not missing, f"{context}: batch {batch} had returned but {sorted(missing)[:5]} are gone"
    for batch in reported.tried:
        found = _identities(batch) & present
        assert not found or found == _identities(batch), f"{context}: batch {batch} is half stored"
    return len(stored)


def test_sigkill_at_random_moments_loses_no_returned_append(outbox_path: Path) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    reported = Reported()
    for run in range(KILLS):
        _record(_kill_at_random(outbox_path, run, rng), reported)
        _check_file(outbox_path, reported, f"seed {seed}, after kill {run + 1}")
    assert reported.committed, f"seed {seed}: no append ever returned before a kill"


async def test_store_carries_on_after_the_kills(outbox_path: Path) -> None:
    reported = Reported()
    rng = random.Random(7)
    for run in range(3):
        _record(_kill_at_random(outbox_path, run, rng), reported)
    before = _check_file(outbox_path, reported, "after three kills")
    store = await Store.open(outbox_path)
    try:
        assert await store.append_cdrs([build_cdr(n) for n in range(10)]) == 10
        # The dead writers left nothing to take back: every pending row is due as it was.
        due = await store.due_cdrs(10_000)
        await store.mark_sent(Kind.CDR, [row.id for row in due])
        counts = (await store.stats()).tables[Kind.CDR].counts
    finally:
        await store.close()
    assert sum(counts.values()) == before + 10
    assert counts[State.PENDING] == 0
