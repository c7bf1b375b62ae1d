"""Outbox benchmark: the store against raw sqlite3 under the same PRAGMAs, in the same run.

    python bench/outbox_bench.py            # full run (builds a 1M-row outbox, ~1 GB, a few minutes)
    python bench/outbox_bench.py --smoke    # small sizes, for CI

Prints rows/s for appending at 1, 10, 100 and 500 rows per transaction through Store.append_cdrs,
next to raw `executemany` into the same table (created by the same migrations, so the same columns
and indexes); rows/s for take + mark-sent, store against the same statements run raw; and the
take + mark-sent cost per row with 10k and with 1M rows already stored (mostly sent, the newest
pending). Taking is what the drainers do: a due read (Store.due_cdrs) leaving out the rows in
flight, here the previous batch, still being sent while the next one is read, then mark-sent.
CDRs are handed over as the listener does, headers already encoded (`raw_json`); one more line
shows 500 rows per transaction with the store encoding them itself. Targets (issue 2): append at
500 rows per transaction >= 60% of raw; take cost per row at 1M <= 1.2 x the cost at 10k.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from connector.cdr.raw import raw_json as encode_raw  # noqa: E402
from connector.outbox.migrate import prepare_database  # noqa: E402
from connector.outbox.names import RAW_JOIN  # noqa: E402
from connector.outbox.records import Kind, NewCdr  # noqa: E402
from connector.outbox.rows import CDR_COLUMNS  # noqa: E402
from connector.outbox.statements import due_sql  # noqa: E402
from connector.outbox.store import PRAGMAS, Store  # noqa: E402
from connector.timeutil import utc_now  # noqa: E402

APPEND_TARGET = 0.60
TAKE_TARGET = 1.20
TAKE_BATCH = 100
PAST = "2026-01-01T00:00:00.000000Z"

# A Cdr event as Asterisk sends it (fixtures/ami/dial-answered.txt), about 600 bytes of JSON.
HEADER_TEMPLATE: tuple[tuple[str, str], ...] = (
    ("Event", "Cdr"),
    ("Privilege", "cdr,all"),
    ("AccountCode", "lab-acct-200"),
    ("Source", "1001"),
    ("Destination", "200"),
    ("DestinationContext", "lab"),
    ("CallerID", '"Alice" <1001>'),
    ("Channel", "PJSIP/1001-00000008"),
    ("DestinationChannel", "PJSIP/200-00000009"),
    ("LastApplication", "Dial"),
    ("LastData", "PJSIP/200,30"),
    ("StartTime", "2026-11-26 23:23:14"),
    ("AnswerTime", "2026-11-26 23:23:16"),
    ("EndTime", "2026-11-26 23:23:58"),
    ("Duration", "44"),
    ("BillableSeconds", "42"),
    ("Disposition", "ANSWERED"),
    ("AMAFlags", "DOCUMENTATION"),
    ("UniqueID", "UNIQUEID"),
    ("UserField", ""),
)

RAW_INSERT = """
INSERT INTO cdr (id, received_at, dedupe_key, identity, fingerprint, source, uniqueid, linkedid,
                 state, attempts, next_attempt_at, updated_at)
VALUES (?, ?, ?, ?, ?, 'ami', ?, ?, ?, 0, ?, ?)
"""
RAW_INSERT_HEADERS = "INSERT INTO cdr_raw (id, raw) VALUES (?, ?)"
# The store's due read (the very statement) and mark-sent statement, run raw for comparison.
RAW_DUE = due_sql(Kind.CDR, CDR_COLUMNS, RAW_JOIN)
RAW_MARK_SENT = (
    "UPDATE cdr SET state = 'sent', sent_at = ?, updated_at = ?, last_error = NULL"
    " WHERE state = 'pending' AND id IN (SELECT value FROM json_each(?))"
)


@dataclass(frozen=True)
class Sizes:
    """How much work each measurement does."""

    append_rows: dict[int, int]  # rows per transaction -> rows appended
    take_rows: int  # rows taken and marked sent, in TAKE_BATCH batches
    small_store: int
    large_store: int
    pending: int  # pending rows in the small and the large store
    repeats: int


FULL = Sizes({1: 2_000, 10: 10_000, 100: 50_000, 500: 100_000}, 20_000, 10_000, 1_000_000, 3_000, 5)
SMOKE = Sizes({1: 200, 10: 1_000, 100: 3_000, 500: 5_000}, 2_000, 2_000, 20_000, 1_000, 1)


def headers(n: int) -> tuple[tuple[str, str], ...]:
    """The n-th CDR's headers."""
    uniqueid = f"1795735394.{n}"
    return tuple((name, uniqueid if value == "UNIQUEID" else value) for name, value in HEADER_TEMPLATE)


def raw_json(n: int) -> str:
    """The n-th CDR's headers as the `raw` column holds them."""
    return encode_raw(headers(n))


def new_cdr(n: int, encoded: bool = True) -> NewCdr:
    """The n-th distinct CDR, as the listener hands it over (headers already encoded, unless not)."""
    return NewCdr(
        headers=headers(n),
        received_at=PAST,
        identity=f"{n:032x}",
        fingerprint=f"{n:031x}f",
        uniqueid=f"1795735394.{n}",
        linkedid=f"1795735394.{n}",
        raw_json=raw_json(n) if encoded else None,
    )


def raw_row(n: int, state: str = "pending") -> tuple[Any, ...]:
    """The n-th CDR (id n + 1) as the parameters of RAW_INSERT (what the store would write)."""
    uniqueid = f"1795735394.{n}"
    identity = f"{n:032x}"
    return (n + 1, PAST, f"{identity}#1", identity, f"{n:031x}f", uniqueid, uniqueid, state, PAST, PAST)


def raw_insert(db: sqlite3.Connection, numbers: Iterable[int], state_of: Callable[[int], str]) -> None:
    """Insert CDRs and their headers with plain executemany, as the store's two statements do."""
    numbers = list(numbers)
    db.executemany(RAW_INSERT, [raw_row(n, state_of(n)) for n in numbers])
    db.executemany(RAW_INSERT_HEADERS, [(n + 1, raw_json(n)) for n in numbers])


def fresh_outbox(folder: Path, name: str) -> Path:
    """A new, migrated outbox file."""
    path = folder / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    prepare_database(path)
    return path


def raw_connection(path: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with the store's PRAGMAs."""
    db = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        db.execute(pragma)
    return db


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    """Consecutive slices of `size` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- append ---------------------------------------------------------------------------------------


def raw_append(path: Path, rows: int, per_txn: int) -> float:
    """Rows/s of raw executemany, one transaction per batch."""
    db = raw_connection(path)
    started = time.perf_counter()
    for batch in batches(list(range(rows)), per_txn):
        db.execute("BEGIN IMMEDIATE")
        raw_insert(db, batch, lambda _: "pending")
        db.execute("COMMIT")
    elapsed = time.perf_counter() - started
    db.close()
    return rows / elapsed


async def store_append(path: Path, rows: int, per_txn: int, encoded: bool = True) -> float:
    """Rows/s of Store.append_cdrs, one call per batch."""
    cdrs = [new_cdr(n, encoded) for n in range(rows)]
    store = await Store.open(path)
    try:
        started = time.perf_counter()
        for batch in batches(cdrs, per_txn):
            await store.append_cdrs(batch)
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    return rows / elapsed


def measure_store_append(folder: Path, rows: int, per_txn: int, encoded: bool) -> float:
    """Store append rows/s into a fresh outbox."""
    return asyncio.run(store_append(fresh_outbox(folder, "store.db"), rows, per_txn, encoded))


def measure_raw_append(folder: Path, rows: int, per_txn: int) -> float:
    """Raw append rows/s into a fresh outbox."""
    return raw_append(fresh_outbox(folder, "raw.db"), rows, per_txn)


def interleaved(repeats: int, ours: Callable[[], float], raw: Callable[[], float]) -> tuple[float, float]:
    """Medians of store and raw measurements taken in turns, so that noise hits both alike."""
    results = [(ours(), raw()) for _ in range(repeats)]
    return statistics.median(r[0] for r in results), statistics.median(r[1] for r in results)


def bench_append(folder: Path, sizes: Sizes) -> float:
    """Print the append table; return the store/raw ratio at 500 rows per transaction."""
    print(f"{'append, rows/txn':<26}{'store rows/s':>14}{'raw rows/s':>14}{'store/raw':>11}")
    ratio = 0.0
    variants = [(per_txn, rows, True) for per_txn, rows in sizes.append_rows.items()]
    variants.append((500, sizes.append_rows[500], False))
    for per_txn, rows, encoded in variants:
        ours, raw = interleaved(
            sizes.repeats,
            partial(measure_store_append, folder, rows, per_txn, encoded),
            partial(measure_raw_append, folder, rows, per_txn),
        )
        label = f"{per_txn}" if encoded else f"{per_txn} (store encodes JSON)"
        ratio = ours / raw if encoded else ratio
        print(f"{label:<26}{ours:>14,.0f}{raw:>14,.0f}{ours / raw:>10.0%}")
    return ratio


# -- take + mark sent ------------------------------------------------------------------------------


class InFlight:
    """A drainer's bookkeeping: the batch being sent while the next one is taken."""

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.sending: list[int] = []
        self.done = 0

    def exclude(self) -> str:
        """The rows in flight, as the due read's JSON parameter."""
        return json.dumps(sorted(self.ids))

    def taken(self, ids: list[int]) -> list[int]:
        """Note a new batch in flight; return the previous one, whose send is now over."""
        self.ids.update(ids)
        self.done += len(ids)
        previous, self.sending = self.sending, ids
        return previous

    def settled(self, ids: list[int]) -> None:
        """The rows are marked sent: no longer in flight."""
        self.ids.difference_update(ids)


def raw_take_and_mark(path: Path, rows: int) -> float:
    """Rows/s of the due read and mark-sent statements run raw, TAKE_BATCH at a time."""
    db = raw_connection(path)
    flight = InFlight()
    started = time.perf_counter()
    while flight.done < rows:
        params = {"now": utc_now(), "exclude": flight.exclude(), "limit": TAKE_BATCH}
        taken = db.execute(RAW_DUE, params).fetchall()
        if not taken:
            break
        sent = flight.taken([row[0] for row in taken])
        db.execute(RAW_MARK_SENT, (PAST, PAST, json.dumps(sent)))
        flight.settled(sent)
    db.execute(RAW_MARK_SENT, (PAST, PAST, json.dumps(flight.sending)))
    elapsed = time.perf_counter() - started
    db.close()
    return flight.done / elapsed


async def take_and_mark(store: Store, rows: int) -> int:
    """Take due rows and mark them sent as the drainer does, until `rows` are done; return how many."""
    flight = InFlight()
    while flight.done < rows:
        taken = await store.due_cdrs(TAKE_BATCH, flight.ids)
        if not taken:
            break
        sent = flight.taken([row.id for row in taken])
        await store.mark_sent(Kind.CDR, sent)
        flight.settled(sent)
    await store.mark_sent(Kind.CDR, flight.sending)
    return flight.done


async def store_take_and_mark(path: Path, rows: int) -> float:
    """Rows/s of Store.due_cdrs + Store.mark_sent, TAKE_BATCH at a time."""
    store = await Store.open(path)
    try:
        started = time.perf_counter()
        done = await take_and_mark(store, rows)
        elapsed = time.perf_counter() - started
    finally:
        await store.close()
    return done / elapsed


def build_outbox(path: Path, total: int, pending: int) -> None:
    """`total` rows, all sent but the newest `pending`: built raw and fast (not measured)."""
    prepare_database(path)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    for start in range(0, total, 50_000):
        db.execute("BEGIN")
        raw_insert(
            db,
            range(start, min(total, start + 50_000)),
            lambda n: "sent" if n < total - pending else "pending",
        )
        db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def measure_store_takes(path: Path, rows: int) -> float:
    """Store take + mark-sent rows/s on a fresh outbox of `rows` pending rows."""
    build_fresh(path, rows, rows)
    return asyncio.run(store_take_and_mark(path, rows))


def measure_raw_takes(path: Path, rows: int) -> float:
    """Raw take + mark-sent rows/s on a fresh outbox of `rows` pending rows."""
    build_fresh(path, rows, rows)
    return raw_take_and_mark(path, rows)


def bench_take(folder: Path, sizes: Sizes) -> None:
    """Print take + mark-sent rows/s, store against raw."""
    rows = sizes.take_rows
    raw_path, store_path = folder / "take-raw.db", folder / "take-store.db"
    ours, raw = interleaved(
        sizes.repeats,
        partial(measure_store_takes, store_path, rows),
        partial(measure_raw_takes, raw_path, rows),
    )
    print(f"\n{'take+mark sent':<26}{'store rows/s':>14}{'raw rows/s':>14}{'store/raw':>11}")
    print(f"{f'{TAKE_BATCH} per take':<26}{ours:>14,.0f}{raw:>14,.0f}{ours / raw:>10.0%}")


def build_fresh(path: Path, total: int, pending: int) -> None:
    """Replace `path` by a newly built outbox."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    build_outbox(path, total, pending)


def reset_pending(path: Path, pending: int) -> None:
    """Make the newest `pending` rows pending and due again (between repeats)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(
        "UPDATE cdr SET state = 'pending', next_attempt_at = ?, sent_at = NULL"
        " WHERE id > (SELECT max(id) FROM cdr) - ?",
        (PAST, pending),
    )
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


async def take_cost_us(path: Path, rows: int) -> tuple[float, float]:
    """Microseconds per row of take + mark-sent, and of one stats() call, on an existing outbox."""
    store = await Store.open(path)
    try:
        await store.due_cdrs(1)  # warm the page cache the way a running drainer has it
        started = time.perf_counter()
        done = await take_and_mark(store, rows)
        per_row = (time.perf_counter() - started) / done * 1e6
        started = time.perf_counter()
        await store.stats()
        stats_us = (time.perf_counter() - started) * 1e6
    finally:
        await store.close()
    return per_row, stats_us


def bench_take_scaling(folder: Path, sizes: Sizes) -> float:
    """Print take cost per row with few and with many rows stored; return large/small."""
    print(f"\n{'rows stored':<22}{'take+mark µs/row':>20}{'stats() ms':>12}")
    costs = []
    for total in (sizes.small_store, sizes.large_store):
        path = folder / f"stored-{total}.db"
        started = time.perf_counter()
        build_outbox(path, total, sizes.pending)
        built_s = time.perf_counter() - started
        results = []
        for _ in range(sizes.repeats):
            reset_pending(path, sizes.pending)
            results.append(asyncio.run(take_cost_us(path, sizes.pending - TAKE_BATCH)))
        per_row = statistics.median(result[0] for result in results)
        stats_ms = statistics.median(result[1] for result in results) / 1000
        costs.append(per_row)
        print(f"{total:<22,}{per_row:>20.1f}{stats_ms:>12.1f}   (built in {built_s:.0f} s)")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return costs[1] / costs[0]


def main() -> int:
    """Run every measurement and print the verdicts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--smoke", action="store_true", help="small sizes (CI)")
    parser.add_argument("--dir", type=Path, help="where to put the database files (default: a temp folder)")
    args = parser.parse_args()
    sizes = SMOKE if args.smoke else FULL
    folder = Path(tempfile.mkdtemp(prefix="outbox-bench-", dir=args.dir))
    try:
        print(f"SQLite {sqlite3.sqlite_version}, PRAGMAs: {'; '.join(PRAGMAS)}; files in {folder}\n")
        append_ratio = bench_append(folder, sizes)
        bench_take(folder, sizes)
        take_ratio = bench_take_scaling(folder, sizes)
    finally:
        shutil.rmtree(folder)
    large, small = f"{sizes.large_store:,}", f"{sizes.small_store:,}"
    print(
        f"\ntarget append >= {APPEND_TARGET:.0%} of raw at 500 rows/txn: {append_ratio:.0%} "
        f"{'ok' if append_ratio >= APPEND_TARGET else 'MISSED'}"
    )
    print(
        f"target take cost at {large} <= {TAKE_TARGET} x at {small}: {take_ratio:.2f} x "
        f"{'ok' if take_ratio <= TAKE_TARGET else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
