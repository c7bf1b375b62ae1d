"""Shared fixtures: a real outbox file under tmp_path, a clean configuration environment, the CLI."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from connector.config import Settings
from connector.outbox.records import NewCdr
from connector.outbox.store import Store

CliRunner = Callable[..., subprocess.CompletedProcess[str]]


def build_cdr(
    n: int,
    *,
    uniqueid: str | None = None,
    received_at: str = "2026-01-01T00:00:00.000000Z",
    fingerprint: str | None = "",
    occurrence: int | None = None,
    source: str = "ami",
) -> NewCdr:
    """Build the n-th distinct CDR (identity and fingerprint derived from n unless given)."""
    uniqueid = uniqueid or f"1700000000.{n}"
    headers = (
        ("Event", "Cdr"),
        ("UniqueID", uniqueid),
        ("Source", "1001"),
        ("Destination", "200"),
        ("Disposition", "ANSWERED"),
        ("Duration", str(n % 97)),
    )
    identity = hashlib.sha256(f"identity {n}".encode()).hexdigest()[:32]
    if fingerprint == "":
        fingerprint = hashlib.sha256(f"frame {n}".encode()).hexdigest()[:32]
    return NewCdr(
        headers=headers,
        received_at=received_at,
        identity=identity,
        fingerprint=fingerprint,
        uniqueid=uniqueid,
        linkedid=uniqueid,
        source=source,
        occurrence=occurrence,
    )


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty DATA_DIR."""
    folder = tmp_path / "data"
    folder.mkdir()
    return folder


@pytest.fixture
def outbox_path(data_dir: Path) -> Path:
    """Where the outbox of `data_dir` lives (not created yet)."""
    return data_dir / "outbox.db"


@pytest.fixture
async def store(outbox_path: Path) -> AsyncIterator[Store]:
    """A migrated, open store on a fresh file."""
    opened = await Store.open(outbox_path)
    try:
        yield opened
    finally:
        await opened.close()


def _without_settings(environ: dict[str, str]) -> dict[str, str]:
    # Settings are case-insensitive: drop `data_dir` as well as `DATA_DIR`.
    names = set(Settings.model_fields)
    return {key: value for key, value in environ.items() if key.lower() not in names}


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Unset every connector variable and work in an empty folder (no stray .env); return it."""
    for key in os.environ.keys() - _without_settings(dict(os.environ)).keys():
        monkeypatch.delenv(key)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


@pytest.fixture
def run_connector(tmp_path: Path) -> CliRunner:
    """Run `python -m connector ARGS` with only the given variables set, in an empty folder."""
    workdir = tmp_path / "cli-cwd"
    workdir.mkdir(exist_ok=True)

    def run(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        environ = _without_settings(dict(os.environ)) | (env or {})
        return subprocess.run(
            [sys.executable, "-m", "connector", *args],
            env=environ,
            cwd=cwd or workdir,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    return run
