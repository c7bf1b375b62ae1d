"""One `connector run` per DATA_DIR, while `status` and `resend` still work beside it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector.errors import OutboxLocked
from connector.outbox.lock import DataDirLock
from connector.outbox.migrate import prepare_database
from tests.conftest import CliRunner

_HOLD = """
import sys
from pathlib import Path
from connector.outbox.lock import DataDirLock
lock = DataDirLock(Path(sys.argv[1]))
lock.acquire()
print("locked", flush=True)
sys.stdin.read()
"""

RUNTIME_ENV = {
    "API_KEY": "sk_" + "a1" * 16,
    "AMI_HOST": "127.0.0.1",
    "AMI_USERNAME": "connector",
    "AMI_PASSWORD": "not-used-here",
    "MONITORING_ENABLED": "false",
}


@pytest.fixture
def holder(data_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the DATA_DIR lock, as a running connector does."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(data_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdin is not None
    assert process.stdout.readline() == "locked\n"
    yield process
    process.stdin.close()
    process.stdout.close()
    process.kill()
    process.wait()


def test_a_second_owner_is_refused_with_the_holders_pid(
    data_dir: Path, holder: subprocess.Popen[str]
) -> None:
    with pytest.raises(OutboxLocked, match=rf"another connector \(pid {holder.pid}\) is running"):
        DataDirLock(data_dir).acquire()


def test_a_second_connector_run_refuses_to_start(
    data_dir: Path, holder: subprocess.Popen[str], run_connector: CliRunner
) -> None:
    result = run_connector("run", env=RUNTIME_ENV | {"DATA_DIR": str(data_dir)})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"another connector (pid {holder.pid}) is running with DATA_DIR {data_dir}" in result.stderr


def test_status_and_resend_work_beside_a_running_connector(
    data_dir: Path, holder: subprocess.Popen[str], run_connector: CliRunner
) -> None:
    prepare_database(data_dir / "outbox.db")
    for command in ("status", "resend"):
        result = run_connector(command, env={"DATA_DIR": str(data_dir)})
        assert result.returncode == 0, result.stderr


def test_the_lock_dies_with_its_holder(data_dir: Path, holder: subprocess.Popen[str]) -> None:
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        assert lock.path.read_text() == f"{os.getpid()}\n"
    finally:
        lock.release()


def test_release_lets_the_next_owner_in(data_dir: Path) -> None:
    first = DataDirLock(data_dir)
    first.acquire()
    with pytest.raises(OutboxLocked):
        DataDirLock(data_dir).acquire()  # flock also excludes a second open file in one process
    first.release()
    second = DataDirLock(data_dir)
    second.acquire()
    second.release()
