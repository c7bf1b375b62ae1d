"""Append CDRs in a loop until killed; used by test_crash.py (run with sys.executable).

    python crash_writer.py OUTBOX RUN SEED

Before each group commit it prints `try RUN FIRST LAST`, and only after append_cdrs returned
`ok RUN FIRST LAST` (flushed), so the parent knows which rows must have survived a SIGKILL. A
drainer task takes due rows and marks rows sent meanwhile, so the kill can also land inside those writes.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from connector.outbox.records import Kind, NewCdr
from connector.outbox.store import Store
from connector.timeutil import utc_now


def crash_cdr(run: int, n: int) -> NewCdr:
    """The n-th row of a run: its identity is `RUN-N`."""
    uniqueid = f"{run}.{n}"
    return NewCdr(
        headers=(("Event", "Cdr"), ("UniqueID", uniqueid), ("Duration", str(n % 60))),
        received_at=utc_now(),
        identity=f"{run}-{n}",
        fingerprint=f"frame-{run}-{n}",
        uniqueid=uniqueid,
        linkedid=None,
    )


async def drain(store: Store) -> None:
    """Take due rows as the drainer does (leaving out those in flight) and mark them sent, forever."""
    in_flight: set[int] = set()
    while True:
        rows = await store.due_cdrs(25, in_flight)
        in_flight.update(row.id for row in rows[1::2])  # sends still in flight when the kill lands
        await store.mark_sent(Kind.CDR, [row.id for row in rows[::2]])
        await asyncio.sleep(0.002)


async def append_forever(store: Store, run: int, rng: random.Random) -> None:
    """Append batches of varying size and report each one."""
    n = 0
    while True:
        size = rng.choice((1, 1, 2, 5, 17, 64, 200))
        batch = [crash_cdr(run, i) for i in range(n, n + size)]
        print(f"try {run} {n} {n + size - 1}", flush=True)
        await store.append_cdrs(batch)
        print(f"ok {run} {n} {n + size - 1}", flush=True)
        n += size


async def main(path: Path, run: int, seed: int) -> None:
    """Open the outbox, say so, then write until killed."""
    store = await Store.open(path)
    print("ready", flush=True)
    drainer = asyncio.create_task(drain(store))
    try:
        await append_forever(store, run, random.Random(seed))
    finally:
        drainer.cancel()
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
