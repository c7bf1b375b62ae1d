"""Gap recovery end to end: `connector run` is killed, calls happen, it restarts → delivered once."""

from __future__ import annotations

import csv
import io
import sqlite3
from pathlib import Path

import pytest

from tests.backfill.helpers import CSV_LAYOUT, append, write
from tests.doubles.ami_server import FakeAmiServer, synthetic_cdr
from tests.doubles.receiver import Receiver
from tests.e2e.harness import (
    ConnectorProcess,
    connector_env,
    count_rows,
    eventually,
)

pytestmark = pytest.mark.timeout(180)


def csv_lines(first: int, count: int) -> bytes:
    """What cdr_csv writes to Master.csv for the synthetic calls first … first+count-1."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    for index in range(first, first + count):
        frame = synthetic_cdr(index).decode().rstrip("\r\n").split("\r\n")
        headers = dict(line.partition(": ")[::2] for line in frame)
        numbers = ("Duration", "BillableSeconds")
        writer.writerow([int(headers[name]) if name in numbers else headers[name] for name in CSV_LAYOUT])
    return out.getvalue().encode()


def csv_line_count(db: Path) -> int:
    """The line the follower has stored up to (0 before it started)."""
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=10) as connection:
        row = connection.execute("SELECT line FROM csv_position").fetchone()
    return int(row[0]) if row else 0


def all_sent(db: Path, total: int) -> bool:
    return count_rows(db) == total and count_rows(db, "state = 'sent'") == total


async def test_calls_made_while_the_connector_is_down_are_delivered_once(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    folder = tmp_path / "cdr-csv"
    folder.mkdir()
    master = folder / "Master.csv"
    write(master, csv_lines(9000, 3))  # history before the first start: not imported (FROM=end)
    env = connector_env(tmp_path, ami, receiver, CDR_BACKFILL_CSV=str(master))
    db = tmp_path / "outbox.db"

    connector = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(1)
    await eventually(lambda: csv_line_count(db) == 3, what="the follower at the end of Master.csv")
    # Calls while the connector listens: Asterisk sends the event and writes the line.
    await ami.send_cdrs(20)
    append(master, csv_lines(0, 20))
    await eventually(lambda: csv_line_count(db) == 23, what="the CSV twins read")
    await eventually(lambda: all_sent(db, 20), what="20 CDRs sent")
    await connector.kill()

    # Calls while the connector is down: only Master.csv has them.
    append(master, csv_lines(20, 10))
    connector = await ConnectorProcess(env, tmp_path).start()
    await eventually(lambda: all_sent(db, 30), what="the 10 missed CDRs recovered and sent")
    await connector.kill()

    # Killed again right after: nothing is read or sent twice.
    connector = await ConnectorProcess(env, tmp_path).start()
    await ami.wait_for_logins(3)
    append(master, csv_lines(30, 1))
    await eventually(lambda: all_sent(db, 31), what="one more call recovered")
    assert await connector.stop() == 0

    summary = receiver.state.summary()
    assert (summary["cdrs"], summary["duplicates"]) == (31, 0)
    assert count_rows(db, "source = 'csv'") == 11
    assert count_rows(db, "uniqueid LIKE '%.900_'") == 0  # the history stayed out
