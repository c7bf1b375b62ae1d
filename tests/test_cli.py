"""The command line: status, resend, purge, migrate, --version and --help."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from connector import __version__
from connector.cli import build_parser, main
from connector.outbox.migrate import known_revisions
from connector.outbox.records import Kind, NewRecording
from connector.outbox.store import Store
from tests.conftest import build_cdr


def moment(second: int) -> str:
    """A fixed UTC time in the past."""
    return f"2026-01-01T00:00:{second:02d}.000000Z"


async def _populate(path: Path) -> None:
    """CDRs 1-8: sent 1-2, filtered 3, failed 4-5, pending 6-8; recordings 1-4: one in each state."""
    store = await Store.open(path)
    try:
        await store.append_cdrs([build_cdr(n, received_at=moment(n)) for n in range(1, 9)])
        await store.append_recordings(
            [NewRecording(f"/spool/r{n}.wav", 2048, 1.5, moment(10 + n)) for n in range(1, 5)]
        )
        await store.mark_sent(Kind.CDR, [1, 2])
        await store.mark_filtered(Kind.CDR, {3: "zero duration"})
        await store.mark_failed(Kind.CDR, {4: "422: bad dst", 5: "400: bad json\nsecond line"})
        await store.mark_sent(Kind.RECORDING, [1])
        await store.mark_filtered(Kind.RECORDING, {2: "too short"})
        await store.mark_failed(Kind.RECORDING, {3: "413: too large"})
    finally:
        await store.close()


@pytest.fixture
def filled(clean_env: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """DATA_DIR set to an outbox with rows in every state; return the outbox path."""
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    path = data_dir / "outbox.db"
    asyncio.run(_populate(path))
    return path


def states(path: Path) -> dict[tuple[str, int], str]:
    """Every row's state, keyed by (table, id)."""
    with sqlite3.connect(path) as db:
        rows = db.execute(
            "SELECT 'cdr', id, state FROM cdr UNION ALL SELECT 'recording', id, state FROM recording"
        )
        found = {(kind, row_id): state for kind, row_id, state in rows}
    db.close()
    return found


def set_updated_at(path: Path, table: str, ids: list[int], when: str) -> None:
    """Pretend rows last changed at `when`."""
    with sqlite3.connect(path) as db:
        db.execute(
            f"UPDATE {table} SET updated_at = ? WHERE id IN (SELECT value FROM json_each(?))",
            (when, json.dumps(ids)),
        )
    db.close()


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the CLI in-process; return exit code, stdout, stderr."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# -- status ----------------------------------------------------------------------------------------


def test_status_text(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "status")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == f"outbox: {filled}"
    table = {line.split()[0]: line.split()[1:] for line in lines[2:5]}
    assert table["table"] == ["pending", "sent", "filtered", "failed", "oldest", "pending"]
    assert table["cdr"][:4] == ["3", "2", "1", "2"]
    assert table["recording"][:4] == ["1", "1", "1", "1"]
    assert re.fullmatch(r"\d+d\d\dh", table["cdr"][4])  # the oldest pending arrived months ago
    failures = lines[lines.index("recent failures (connector resend moves them back to pending):") + 1 :]
    assert len(failures) == 3
    assert any(
        line.startswith("  cdr #5 ") and line.endswith("400: bad json second line") for line in failures
    )
    assert any(line.startswith("  recording #3 ") and "413: too large" in line for line in failures)


def test_status_json(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "status", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["outbox"] == str(filled)
    cdr, recording = report["tables"]["cdr"], report["tables"]["recording"]
    assert {key: cdr[key] for key in ("pending", "sent", "filtered", "failed")} == {
        "pending": 3,
        "sent": 2,
        "filtered": 1,
        "failed": 2,
    }
    assert cdr["oldest_pending_at"] == moment(6)
    assert cdr["oldest_pending_age_s"] > 0
    assert recording["pending"] == recording["sent"] == recording["filtered"] == recording["failed"] == 1
    assert recording["oldest_pending_at"] == moment(14)
    failures = {(item["kind"], item["id"]): item for item in report["recent_failures"]}
    assert set(failures) == {("cdr", 4), ("cdr", 5), ("recording", 3)}
    assert failures[("cdr", 4)]["last_error"] == "422: bad dst"
    assert failures[("cdr", 4)]["attempts"] == 1


def test_status_of_an_empty_outbox(clean_env: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    assert main(["status", "--json"]) == 0
    assert (data_dir / "outbox.db").exists()


# -- resend ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "moved"),
    [
        ((), {("cdr", 4), ("cdr", 5), ("recording", 3)}),
        (("--kind", "recording"), {("recording", 3)}),
        (("--kind", "cdr", "--id", "5", "6", "99"), {("cdr", 5)}),
        (("--kind", "recording", "--id", "3"), {("recording", 3)}),
    ],
)
def test_resend_moves_failed_rows_back(
    filled: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], moved: set[tuple[str, int]]
) -> None:
    before = states(filled)
    code, out, _ = cli(capsys, "resend", *args)
    assert code == 0
    assert out == f"moved {len(moved)} failed row(s) back to pending\n"
    after = states(filled)
    assert {key for key in after if after[key] != before[key]} == moved
    assert all(after[key] == "pending" for key in moved)


def test_resend_by_id_needs_the_table(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = states(filled)
    code, _, err = cli(capsys, "resend", "--id", "3")
    assert code == 2 and "--kind" in err and len(err.strip().splitlines()) == 1
    assert states(filled) == before


def test_resend_since(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_updated_at(filled, "cdr", [4], "2020-01-01T00:00:00.000000Z")
    code, out, _ = cli(capsys, "resend", "--since", "2025-06-01T12:00:00+02:00")
    assert (code, out) == (0, "moved 2 failed row(s) back to pending\n")
    assert states(filled)[("cdr", 4)] == "failed"
    assert cli(capsys, "resend", "--since", "2019-12-31")[1] == "moved 1 failed row(s) back to pending\n"


@pytest.mark.parametrize("since", ["yesterday", "2026-13-01", "1.5"])
def test_resend_with_a_bad_since_is_one_line(
    filled: Path, capsys: pytest.CaptureFixture[str], since: str
) -> None:
    before = states(filled)
    code, out, err = cli(capsys, "resend", "--since", since)
    assert (code, out) == (2, "")
    assert err.startswith("error: --since: ") and err.count("\n") == 1
    assert "is not an ISO time" in err
    assert states(filled) == before


# -- purge -----------------------------------------------------------------------------------------


def test_purge_older_than(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old = "2020-01-01T00:00:00.000000Z"
    set_updated_at(filled, "cdr", [1, 3, 4, 6], old)  # sent, filtered, failed, pending
    set_updated_at(filled, "recording", [1], old)  # sent
    code, out, _ = cli(capsys, "purge", "--older-than", "7")
    assert (code, out) == (0, "purged 3 sent/filtered row(s) older than 7 day(s)\n")
    remaining = states(filled)
    assert ("cdr", 1) not in remaining and ("cdr", 3) not in remaining and ("recording", 1) not in remaining
    assert remaining[("cdr", 4)] == "failed" and remaining[("cdr", 6)] == "pending"
    assert remaining[("cdr", 2)] == "sent"  # recent


def test_purge_defaults_to_the_retention(
    filled: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTBOX_RETENTION_DAYS", "10")
    set_updated_at(filled, "cdr", [1], "2020-01-01T00:00:00.000000Z")
    assert cli(capsys, "purge")[1] == "purged 1 sent/filtered row(s) older than 10 day(s)\n"


def test_purge_with_a_negative_age_is_one_line(filled: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(capsys, "purge", "--older-than", "-1") == (
        2,
        "",
        "error: --older-than: must be 0 or more days\n",
    )


# -- migrate, version, help ------------------------------------------------------------------------


def test_migrate(
    clean_env: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATA_DIR", str(data_dir))
    head = known_revisions()[1]
    expected = f"outbox {data_dir / 'outbox.db'} is at schema {head} (newest)\n"
    assert cli(capsys, "migrate") == (0, expected, "")
    assert cli(capsys, "migrate") == (0, expected, "")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"connector {__version__}\n"


def _sub_commands() -> list[str]:
    parser = build_parser()
    actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


def test_every_documented_command_exists() -> None:
    assert {"run", "status", "resend", "purge", "migrate"} <= set(_sub_commands())


@pytest.mark.parametrize(
    "command", [[], *([name] for name in _sub_commands())], ids=lambda c: c[0] if c else "top"
)
def test_help_everywhere(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: {' '.join(['connector', *command])}")


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "status" in capsys.readouterr().out


def test_the_console_script(data_dir: Path) -> None:
    script = Path(sys.executable).with_name("connector")
    if not script.exists():
        pytest.skip("the connector console script is not installed next to this interpreter")
    version = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout == f"connector {__version__}\n"
    status = subprocess.run(
        [str(script), "status", "--json"],
        env={"PATH": "/usr/bin:/bin", "DATA_DIR": str(data_dir)},
        cwd=data_dir,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(status.stdout)["tables"]["cdr"]["pending"] == 0
