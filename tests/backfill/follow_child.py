"""Follow a CSV file into an outbox until killed; used by test_crash.py (run with sys.executable).

    python follow_child.py OUTBOX CSV

Prints `ready` once the store is open. Small batches and no grace period make it commit often, so
a SIGKILL lands before, inside and after the transactions that store rows with their position.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from connector.backfill.follower import CsvFollower
from connector.backfill.lines import check_layout
from connector.outbox.store import Store


async def main(outbox: Path, csv_path: Path) -> None:
    """Open the outbox, say so, then follow until killed."""
    store = await Store.open(outbox)
    follower = CsvFollower(
        store,
        csv_path,
        check_layout("csv"),
        start="start",
        grace_s=0.0,
        poll_interval_s=0.002,
        batch_bytes=4096,
    )
    print("ready", flush=True)
    try:
        await follower.run()
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2])))
