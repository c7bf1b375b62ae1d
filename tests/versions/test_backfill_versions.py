"""Gap recovery from each Asterisk version's real Master.csv: only what AMI missed, each CDR once.

Part of the captured calls reach `connector run` over AMI; the rest is recovered from the same
version's Master.csv (cdr_csv, 18 columns), by the follower after a crash and by `connector backfill`.
Row i of Master.csv is Cdr event i (fixtures/versions/README.md); the ForkCDR twins are two
byte-identical lines there, and both must be kept.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import pytest

from connector.cdr.identity import canonical_identity, event_id
from tests.backfill.helpers import append, rows
from tests.backfill.test_command import summary_counts
from tests.doubles.captured import captured_session, cdr_headers, version_folder
from tests.doubles.receiver import Receiver
from tests.e2e.harness import ConnectorProcess, eventually
from tests.paths import ASTERISK_VERSIONS
from tests.versions.helpers import CDR_COUNT, all_sent, captured_ami, run_env

pytestmark = pytest.mark.timeout(120)

Headers = list[tuple[str, str]]
AMI_FIRST = 50  # the follower test: the first 50 CDRs come over AMI, then the connector crashes


def csv_position_saved(db: Path) -> bool:
    """The follower has opened Master.csv and saved where it stands."""
    if not db.exists():
        return False
    with sqlite3.connect(db, timeout=10) as connection:
        tables = connection.execute("SELECT name FROM sqlite_master WHERE name = 'csv_position'").fetchall()
        return bool(tables) and connection.execute("SELECT count(*) FROM csv_position").fetchone()[0] > 0


def forkcdr_twins(captured: Sequence[Headers], master: Path) -> list[tuple[int, int]]:
    """The index pairs of the ForkCDR twins: one identity, one Master.csv line, two Sequences."""
    lines = master.read_bytes().splitlines()
    twins = [
        (i, i + 1)
        for i in range(len(captured) - 1)
        if canonical_identity(captured[i]) == canonical_identity(captured[i + 1])
    ]
    assert all(lines[i] == lines[j] for i, j in twins)
    assert all(dict(captured[i])["Sequence"] != dict(captured[j])["Sequence"] for i, j in twins)
    return twins


def assert_recovered_exactly(
    db: Path, receiver: Receiver, captured: Sequence[Headers], missed: set[int]
) -> None:
    """82 rows, all sent once; the `csv` ones are exactly the CDRs AMI did not deliver."""
    stored = rows(db)
    assert len(stored) == CDR_COUNT and {row["state"] for row in stored} == {"sent"}
    recovered = [row for row in stored if row["source"] == "csv"]
    assert Counter(row["identity"] for row in recovered) == Counter(
        canonical_identity(captured[index]) for index in missed
    )
    over_ami = [row for row in stored if row["source"] == "ami"]
    assert Counter(row["identity"] for row in over_ami) == Counter(
        canonical_identity(headers) for index, headers in enumerate(captured) if index not in missed
    )
    snapshot = receiver.state.snapshot()
    assert (snapshot["cdrs"], snapshot["duplicates"]) == (CDR_COUNT, 0)
    assert set(snapshot["counts"]) == {event_id(row["dedupe_key"]) for row in stored}
    assert Counter(cdr["uniqueid"] for cdr in snapshot["cdr_list"]) == Counter(
        dict(headers)["UniqueID"] for headers in captured
    )


def assert_twins_kept(db: Path, captured: Sequence[Headers], twins: list[tuple[int, int]]) -> None:
    """Each ForkCDR pair is two rows from one source, two event_ids."""
    for first, _ in twins:
        pair = rows(db, "identity = ?", (canonical_identity(captured[first]),))
        assert len(pair) == 2 and len({row["source"] for row in pair}) == 1
        assert len({event_id(row["dedupe_key"]) for row in pair}) == 2


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
async def test_the_follower_recovers_what_a_crash_missed_from_master_csv(
    version: str, tmp_path: Path, receiver: Receiver
) -> None:
    folder = version_folder(version)
    session = captured_session(folder)
    captured = [cdr_headers(frame) for frame in session.cdr_frames]
    lines = (folder / "Master.csv").read_bytes().splitlines(keepends=True)
    assert len(lines) == CDR_COUNT
    twins = forkcdr_twins(captured, folder / "Master.csv")
    missed = set(range(AMI_FIRST, CDR_COUNT))
    assert len(twins) == 2 and all(i in missed for pair in twins for i in pair)  # both pairs CSV-only
    master = tmp_path / "cdr-csv" / "Master.csv"
    master.parent.mkdir()
    master.write_bytes(b"")
    db = tmp_path / "outbox.db"

    async with captured_ami(version, session) as ami:
        env = run_env(tmp_path, ami, receiver, CDR_BACKFILL_CSV=str(master))
        first = await ConnectorProcess(env, tmp_path).start()
        await ami.wait_for_logins(1)
        await eventually(lambda: csv_position_saved(db), what="the follower at the end of Master.csv")
        # Calls while the connector listens: Asterisk sends the event and writes the line.
        assert await ami.replay(session.cdr_frames[:AMI_FIRST]) == AMI_FIRST
        append(master, b"".join(lines[:AMI_FIRST]))
        await eventually(lambda: all_sent(db, AMI_FIRST), what=f"{AMI_FIRST} CDRs sent")
        await first.kill()
        # Calls while the connector is down: only Master.csv has them.
        append(master, b"".join(lines[AMI_FIRST:]))
        second = await ConnectorProcess(env, tmp_path).start()
        await eventually(lambda: all_sent(db, CDR_COUNT), what="the missed CDRs recovered and sent")
        assert await second.stop() == 0
    assert "Traceback" not in first.log + second.log

    assert_recovered_exactly(db, receiver, captured, missed)
    assert_twins_kept(db, captured, twins)


def every_other_call(captured: Sequence[Headers]) -> set[int]:
    """The indexes of the CDRs of the odd-numbered calls (calls by LinkedID, in order of first CDR)."""
    calls: dict[str, int] = {}
    for headers in captured:
        calls.setdefault(dict(headers)["LinkedID"], len(calls))
    return {index for index, headers in enumerate(captured) if calls[dict(headers)["LinkedID"]] % 2}


async def backfill(env: dict[str, str], master: Path) -> dict[str, int]:
    """Run `connector backfill --file MASTER` as its own process; return its summary counts."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector",
        "backfill",
        "--file",
        str(master),
        env=env,
        cwd=env["DATA_DIR"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, out.decode() + err.decode()
    return summary_counts(out.decode())


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
async def test_connector_backfill_recovers_every_other_call_next_to_a_running_connector(
    version: str, tmp_path: Path, receiver: Receiver
) -> None:
    folder = version_folder(version)
    session = captured_session(folder)
    captured = [cdr_headers(frame) for frame in session.cdr_frames]
    twins = forkcdr_twins(captured, folder / "Master.csv")
    missed = every_other_call(captured)
    assert 0 < len(missed) < CDR_COUNT
    # One ForkCDR call came over AMI, the other is only in Master.csv.
    assert sorted(pair[0] in missed for pair in twins) == [False, True]
    delivered = [frame for index, frame in enumerate(session.cdr_frames) if index not in missed]
    db = tmp_path / "outbox.db"

    async with captured_ami(version, session) as ami:
        env = run_env(tmp_path, ami, receiver)
        connector = await ConnectorProcess(env, tmp_path).start()
        await ami.wait_for_logins(1)
        assert await ami.replay(delivered) == len(delivered)
        await eventually(lambda: all_sent(db, len(delivered)), what="the AMI calls sent")

        first = await backfill(env, folder / "Master.csv")
        await eventually(lambda: all_sent(db, CDR_COUNT), what="the recovered calls sent")
        again = await backfill(env, folder / "Master.csv")
        assert await connector.stop() == 0
    assert "Traceback" not in connector.log

    assert first == {"already known": len(delivered), "recovered": len(missed), "malformed": 0}
    assert again == {"already known": CDR_COUNT, "recovered": 0, "malformed": 0}
    assert_recovered_exactly(db, receiver, captured, missed)
    assert_twins_kept(db, captured, twins)
