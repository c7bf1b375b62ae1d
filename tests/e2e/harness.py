"""Run `connector run` as a real subprocess between the fake AMI server and the loopback receiver."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from connector.demo.ports import free_port
from tests.doubles.ami_server import FakeAmiServer
from tests.doubles.receiver import Receiver

API_KEY = "sk_" + "e2e" * 10 + "ab"
AMI_USER = "connector"
AMI_SECRET = "secret"


def connector_env(data_dir: Path, ami: FakeAmiServer, receiver: Receiver, **extra: str) -> dict[str, str]:
    """The environment of a connector wired to the test doubles (no .env, no inherited config)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AMI_", "CDR_", "API_"))}
    env.update(
        DATA_DIR=str(data_dir),
        AMI_HOST="127.0.0.1",
        AMI_PORT=str(ami.port),
        AMI_USERNAME=AMI_USER,
        AMI_PASSWORD=AMI_SECRET,
        API_KEY=API_KEY,
        API_BASE_URL=receiver.base_url,
        MONITORING_HOST="127.0.0.1",
        MONITORING_PORT=str(free_port()),
        CDR_BATCH_FORCE_TIMEOUT="0.2",
        CDR_BATCH_TIMEOUT="1",
        ASTERISK_TZ="UTC",
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


@dataclass
class ConnectorProcess:
    """One `python -m connector run` child process."""

    env: Mapping[str, str]
    cwd: Path
    process: asyncio.subprocess.Process | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.cwd / f"connector-{os.getpid()}-{id(self)}.log"

    async def start(self) -> ConnectorProcess:
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "connector",
            "run",
            env=dict(self.env),
            cwd=self.cwd,
            stdout=log,
            stderr=log,
        )
        log.close()
        return self

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def stop(self, signum: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signum)
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def wait(self, timeout_s: float = 30) -> int:
        """Wait for the process to exit on its own."""
        assert self.process is not None
        return await asyncio.wait_for(self.process.wait(), timeout_s)

    async def kill(self) -> None:
        await self.stop(signal.SIGKILL)


def count_rows(db: Path, where: str = "1") -> int:
    """Rows in the outbox's cdr table, read with plain sqlite3 like an operator would."""
    if not db.exists():
        return 0
    with sqlite3.connect(db, timeout=10) as connection:
        return int(connection.execute(f"SELECT count(*) FROM cdr WHERE {where}").fetchone()[0])


async def eventually(check: Callable[[], bool], timeout_s: float = 30, what: str = "condition") -> None:
    """Poll until `check()` holds."""
    try:
        async with asyncio.timeout(timeout_s):
            while not check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None
