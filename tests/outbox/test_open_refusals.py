"""Files the connector must refuse: one line, exit 2, and the file left exactly as it was."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connector.outbox.migrate import prepare_database
from tests.conftest import CliRunner
from tests.outbox.test_migrations import digest

NOBODY = 65534

# Root ignores permission bits, so as root the command runs as `nobody`. The interpreter may live
# where `nobody` cannot read (e.g. /root/.pyenv), so the child imports everything as root (one
# `status` against a scratch folder loads every lazily imported module) and only then drops to
# `nobody` to run the command under test.
_AS_NOBODY = f"""
import contextlib, io, os, sys, tempfile
import connector.cli
with tempfile.TemporaryDirectory() as scratch, contextlib.redirect_stdout(io.StringIO()):
    os.environ["DATA_DIR"] = scratch
    connector.cli.main(["status"])
os.environ["DATA_DIR"] = sys.argv[1]
os.setgroups([])
os.setgid({NOBODY})
os.setuid({NOBODY})
sys.exit(connector.cli.main(sys.argv[2:]))
"""


def _not_sqlite(path: Path) -> None:
    path.write_text("PID=1234\nthis is somebody's notes, not a database\n")


def _other_application(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO users (name) VALUES ('alice')")
    db.close()


def _corrupt_outbox(path: Path) -> None:
    prepare_database(path)
    data = bytearray(path.read_bytes())
    data[100:4096] = bytes((i * 37) % 251 for i in range(3996))  # the schema page
    path.write_bytes(bytes(data))


def _truncated_outbox(path: Path) -> None:
    prepare_database(path)
    path.write_bytes(path.read_bytes()[:5000])


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_not_sqlite, "is not a SQLite database"),
        (_other_application, "is not a connector outbox (it holds tables users)"),
        (_corrupt_outbox, "is corrupt or unreadable"),
        (_truncated_outbox, "is corrupt or unreadable"),
    ],
    ids=["not-sqlite", "other-application", "corrupt", "truncated"],
)
@pytest.mark.parametrize("command", ["status", "migrate", "resend"])
def test_a_file_that_is_not_our_outbox_is_refused_untouched(
    outbox_path: Path, run_connector: CliRunner, make: Callable[[Path], None], expected: str, command: str
) -> None:
    make(outbox_path)
    before = digest(outbox_path)
    result = run_connector(command, env={"DATA_DIR": str(outbox_path.parent)})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {outbox_path} ")
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert digest(outbox_path) == before


def test_a_missing_folder_is_refused_and_not_created(tmp_path: Path, run_connector: CliRunner) -> None:
    data_dir = tmp_path / "not-mounted" / "data"
    result = run_connector("status", env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 2
    assert result.stderr == f"error: DATA_DIR {data_dir} does not exist: create it or mount a volume there\n"
    assert not data_dir.parent.exists()


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder another user can reach (pytest's tmp_path is private to root)."""
    if os.geteuid() != 0:
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="outbox-perm-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder)


def _run_unprivileged(data_dir: Path, command: str) -> subprocess.CompletedProcess[str]:
    """Run a connector command as a user that permission bits apply to."""
    if os.geteuid() == 0:
        args = [sys.executable, "-c", _AS_NOBODY, str(data_dir), command]
        env = {key: value for key, value in os.environ.items() if key.lower() != "data_dir"}
    else:
        args = [sys.executable, "-m", "connector", command]
        env = os.environ | {"DATA_DIR": str(data_dir)}
    result = subprocess.run(
        args, env=env, cwd=data_dir.parent, capture_output=True, text=True, timeout=60, check=False
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _make_read_only_file(data_dir: Path, outbox: Path) -> None:
    if os.geteuid() == 0:
        os.chown(data_dir, NOBODY, -1)  # the folder is writable for nobody, the file (root's) is not
        outbox.chmod(0o644)
    else:
        outbox.chmod(0o444)


def _make_unwritable_folder(data_dir: Path, outbox: Path) -> None:
    if os.geteuid() == 0:
        os.chown(outbox, NOBODY, -1)  # the file is nobody's, the folder (root's 0755) is not writable
    else:
        data_dir.chmod(0o555)


@pytest.mark.parametrize(
    ("restrict", "expected"),
    [
        (_make_read_only_file, "outbox.db is read-only for this user"),
        (_make_unwritable_folder, "is not writable by this user"),
    ],
    ids=["read-only-file", "unwritable-folder"],
)
@pytest.mark.parametrize("command", ["status", "migrate"])
def test_permission_problems_are_one_line_and_leave_the_file_alone(
    shared_dir: Path, restrict: Callable[[Path, Path], None], expected: str, command: str
) -> None:
    data_dir = shared_dir / "data"
    data_dir.mkdir()
    outbox = data_dir / "outbox.db"
    prepare_database(outbox)
    before = digest(outbox)
    restrict(data_dir, outbox)
    try:
        result = _run_unprivileged(data_dir, command)
    finally:
        data_dir.chmod(0o755)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr
    assert "fix its owner or permissions" in result.stderr
    assert digest(outbox) == before


def test_an_unwritable_empty_folder_gets_no_outbox(shared_dir: Path) -> None:
    data_dir = shared_dir / "data"
    data_dir.mkdir()
    if os.geteuid() != 0:
        data_dir.chmod(0o555)
    try:
        result = _run_unprivileged(data_dir, "migrate")
    finally:
        data_dir.chmod(0o755)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: DATA_DIR {data_dir} is not writable")
    assert list(data_dir.iterdir()) == []
