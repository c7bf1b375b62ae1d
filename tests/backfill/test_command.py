"""`connector backfill`: the one-off import, its progress display, summary and errors."""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from pathlib import Path

import pytest

from connector.ami.ingest import new_cdr
from connector.backfill.command import add_backfill_parser, import_progress
from connector.cli import build_parser, main
from connector.errors import UserError
from connector.outbox.store import Store
from connector.progress import Progress
from tests.backfill.helpers import csv_line, rows, write
from tests.cdr.helpers import CUSTOM_LAYOUT, paired_ami
from tests.paths import PAIRED_FIXTURES

MASTER = str(PAIRED_FIXTURES / "Master.csv")


@pytest.fixture
def env(clean_env: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Only DATA_DIR set, as for `connector status`."""
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    return data_dir


def backfill(*argv: str) -> int:
    """Run `connector backfill ARGV` in this process, through its own sub-parser."""
    parser = argparse.ArgumentParser(prog="connector")
    add_backfill_parser(parser.add_subparsers())
    args = parser.parse_args(["backfill", *argv])
    return int(args.handler(args))


async def store_ami(outbox: Path) -> None:
    store = await Store.open(outbox)
    try:
        await store.append_cdrs([new_cdr(headers, time.time()) for headers in paired_ami()])
    finally:
        await store.close()


def summary_counts(output: str) -> dict[str, int]:
    """The already known / recovered / malformed counts of a summary."""
    counts = {}
    for line in output.splitlines():
        label, _, number = line.strip().rpartition(" ")
        if label.strip() in ("already known", "recovered", "malformed"):
            counts[label.strip()] = int(number.replace(",", ""))
    return counts


def test_import_recovers_what_ami_missed_and_repeating_it_adds_nothing(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(store_ami(env / "outbox.db"))

    assert backfill("--file", MASTER) == 0
    first = capsys.readouterr()
    assert backfill("--file", MASTER) == 0
    second = capsys.readouterr()

    assert "69 lines read" in first.out
    assert summary_counts(first.out) == {"already known": 57, "recovered": 12, "malformed": 0}
    assert summary_counts(second.out) == {"already known": 69, "recovered": 0, "malformed": 0}
    assert "backfill: 100% (69 lines" in first.err  # plain progress lines: stderr is not a terminal
    assert len(rows(env / "outbox.db", "source = 'csv'")) == 12


def test_custom_layout_and_from_date(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    custom = str(PAIRED_FIXTURES / "custom-Master.csv")
    assert backfill("--file", custom, "--columns", CUSTOM_LAYOUT, "--from", "2026-11-26 23:30:00") == 0

    out = capsys.readouterr().out
    assert summary_counts(out)["recovered"] == 14
    assert " 55  (before 2026-11-26 23:30:00 or blank)" in out


def test_malformed_lines_are_listed_with_their_numbers(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "Master.csv"
    write(path, csv_line(1) + b'"only","three","columns"\n' + csv_line(2) + csv_line(3)[:50])

    assert backfill("--file", str(path)) == 0

    out = capsys.readouterr().out
    assert summary_counts(out) == {"already known": 0, "recovered": 2, "malformed": 2}
    assert "  line 2: 3 columns, the layout has 18" in out
    assert "  line 4: incomplete last line (no line end)" in out


def test_a_wrong_layout_says_so(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert backfill("--file", str(PAIRED_FIXTURES / "custom-Master.csv")) == 0
    assert "no line matched the layout: check --columns" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--file", "/nonexistent/Master.csv"], "--file: /nonexistent/Master.csv is not a readable file"),
        (["--file", MASTER, "--columns", "uniqueid,src"], "--columns: the layout lacks Channel"),
        (["--file", MASTER, "--columns", "bogus"], "--columns: unknown CDR field 'bogus'"),
        (["--file", MASTER, "--from", "yesterday"], "--from: 'yesterday' is not start or an ISO date"),
        (["--file", MASTER, "--from", "end"], "--from: use start or a date"),
        (["--file", MASTER, "--from", "2026-11-01Z", "--tz", "Mars/Olympus"], "--tz: unknown time zone"),
    ],
)
def test_user_mistakes_are_one_line(env: Path, argv: list[str], message: str) -> None:
    with pytest.raises(UserError, match="^" + message.replace("(", r"\(")):
        backfill(*argv)


def test_progress_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    display = Progress(stream)
    update = import_progress(1000, display)
    update(500, 10)
    update(1000, 20)
    display.end()

    shown = stream.getvalue()
    assert shown.startswith("\r[" + "#" * 15 + "-" * 15 + "]  50%  10 lines")
    assert "\r[" + "#" * 30 + "] 100%  20 lines" in shown
    assert shown.endswith("\n")


def test_plain_progress_lines_every_ten_percent() -> None:
    stream = io.StringIO()
    display = Progress(stream)
    update = import_progress(100, display)
    for done in range(0, 101, 5):
        update(done, done)
    display.end()

    assert [line.split("%")[0] for line in stream.getvalue().splitlines()] == [
        f"backfill: {percent}" for percent in range(10, 101, 10)
    ]


backfill_registered = "backfill" in build_parser().format_help()


@pytest.mark.skipif(not backfill_registered, reason="connector.cli does not register `backfill` yet")
def test_the_connector_command_line_runs_it(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backfill", "--file", MASTER]) == 0
    assert summary_counts(capsys.readouterr().out)["recovered"] == 69
    assert main(["backfill", "--file", "/nonexistent"]) == 2
    assert capsys.readouterr().err.startswith("error: --file: /nonexistent is not a readable file")
