"""The real capture: the same calls over AMI and in both CSV backends, plus calls made while no AMI
client was connected. Every CDR must be stored once, and only the CSV-only ones recovered.

That each AMI Cdr has the identity of its CSV row is tested on its own in
tests/cdr/test_identity.py (test_every_ami_cdr_has_the_identity_of_its_csv_rows).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connector.ami.ingest import new_cdr
from connector.backfill.command import import_file
from connector.backfill.follower import CsvFollower
from connector.backfill.lines import LineParser, check_layout
from connector.cdr.csv_rows import parse_line
from connector.metrics import REGISTRY
from connector.outbox.store import Store
from tests.backfill.conftest import FollowerFactory
from tests.backfill.helpers import rows
from tests.cdr.helpers import CUSTOM_LAYOUT, paired_ami
from tests.paths import PAIRED_FIXTURES

LAYOUTS = [("Master.csv", "csv"), ("custom-Master.csv", CUSTOM_LAYOUT)]
CSV_ONLY_LINES = range(56, 68)  # README: rows 56-67 of both files were written with no AMI client


def csv_only_uniqueids(name: str, spec: str) -> list[str]:
    """The UniqueIDs of the CSV-only rows, read from the file itself."""
    column = check_layout(spec).index("UniqueID")
    lines = (PAIRED_FIXTURES / name).read_text().splitlines()
    return sorted(parse_line(lines[n - 1])[column] for n in CSV_ONLY_LINES)


def recovered_total() -> float:
    return REGISTRY.get_sample_value("cdrs_recovered_total", {"source": "csv"}) or 0.0


async def replay_ami(store: Store) -> int:
    """Store the Cdr events of both AMI sessions as the listener does."""
    return await store.append_cdrs([new_cdr(headers, time.time()) for headers in paired_ami()])


Paired = Callable[[Store, str, str], CsvFollower]


@pytest.fixture
def paired(make_follower: FollowerFactory) -> Paired:
    """Followers of the paired CSV files, from their start."""

    def make(store: Store, name: str, spec: str) -> CsvFollower:
        return make_follower(store, PAIRED_FIXTURES / name, check_layout(spec))

    return make


@pytest.mark.parametrize(("name", "spec"), LAYOUTS)
async def test_ami_then_csv_stores_each_cdr_once_and_recovers_the_csv_only_ones(
    store: Store, outbox_path: Path, paired: Paired, name: str, spec: str
) -> None:
    assert await replay_ami(store) == 57
    before = recovered_total()
    follower = paired(store, name, spec)

    assert await follower.run_once() == 69

    assert len(rows(outbox_path)) == 69
    recovered = rows(outbox_path, "source = 'csv'")
    assert sorted(row["uniqueid"] for row in recovered) == csv_only_uniqueids(name, spec)
    assert (follower.recovered, follower.known, follower.malformed) == (12, 57, 0)
    assert recovered_total() - before == 12
    assert all(row["state"] == "pending" and row["fingerprint"] is None for row in recovered)


@pytest.mark.parametrize(("name", "spec"), LAYOUTS)
async def test_csv_then_ami_stores_each_cdr_once(
    store: Store, outbox_path: Path, paired: Paired, name: str, spec: str
) -> None:
    follower = paired(store, name, spec)
    assert await follower.run_once() == 69
    assert follower.recovered == 69

    assert await replay_ami(store) == 0

    stored = rows(outbox_path)
    assert len(stored) == 69
    # Every AMI frame found its CSV twin (it left its fingerprint there); the 12 others stay CSV-only.
    csv_only = [row for row in stored if row["fingerprint"] is None]
    assert sorted(row["uniqueid"] for row in csv_only) == csv_only_uniqueids(name, spec)


async def test_csv_then_ami_marks_only_the_csv_only_cdrs_as_recovered(
    store: Store, outbox_path: Path, paired: Paired
) -> None:
    await paired(store, "Master.csv", "csv").run_once()
    await replay_ami(store)

    recovered = rows(outbox_path, "source = 'csv'")
    assert sorted(row["uniqueid"] for row in recovered) == csv_only_uniqueids("Master.csv", "csv")


async def test_both_csv_backends_describe_the_same_cdrs(
    store: Store, outbox_path: Path, paired: Paired
) -> None:
    await paired(store, "Master.csv", "csv").run_once()
    custom = paired(store, "custom-Master.csv", CUSTOM_LAYOUT)

    await custom.run_once()

    assert (custom.recovered, custom.known) == (0, 69)
    assert len(rows(outbox_path)) == 69


async def test_reading_the_file_again_adds_nothing(store: Store, outbox_path: Path, paired: Paired) -> None:
    await replay_ami(store)
    await paired(store, "Master.csv", "csv").run_once()
    keys = [row["dedupe_key"] for row in rows(outbox_path)]

    # A one-off import of the same file numbers every line the same way: nothing new.
    again = await import_file(store, PAIRED_FIXTURES / "Master.csv", LineParser(check_layout("csv")))

    assert (again.read, again.known, again.recovered) == (69, 69, 0)
    assert [row["dedupe_key"] for row in rows(outbox_path)] == keys


async def test_recovered_rows_carry_the_csv_values_under_ami_header_names(
    store: Store, outbox_path: Path, paired: Paired
) -> None:
    await paired(store, "custom-Master.csv", CUSTOM_LAYOUT).run_once()

    (row,) = await store.cdrs_by_uniqueid("1795735808.113")
    fields = dict(row.headers)
    assert row.source == "csv"
    assert fields["UniqueID"] == "1795735808.113"
    assert row.linkedid == fields["LinkedID"] == "1795735808.113"
    assert fields["CallerID"] == '"" <>'
    assert fields["Source"] == ""
    assert set(fields) >= {"StartTime", "EndTime", "Disposition", "Sequence", "DestinationChannel"}
