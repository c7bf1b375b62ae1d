"""Shared by the per-version tests: a fake AMI server answering as one captured Asterisk did."""

from __future__ import annotations

from pathlib import Path

from tests.doubles.ami_server import FakeAmiServer
from tests.doubles.captured import SECRET, USER, CapturedSession, captured_users
from tests.doubles.receiver import Receiver
from tests.e2e.harness import connector_env, count_rows

# README of fixtures/versions: the dispositions of the 82 CDRs of the main session, on all four.
DISPOSITIONS = {"ANSWERED": 61, "NO ANSWER": 7, "FAILED": 6, "BUSY": 4, "CONGESTION": 4}
CDR_COUNT = 82


def captured_ami(version: str, session: CapturedSession) -> FakeAmiServer:
    """An AMI server with `session`'s banner and command answers and the capture's user (not started)."""
    return FakeAmiServer(captured_users(version), banner=session.banner, commands=session.commands)


def run_env(data_dir: Path, ami: FakeAmiServer, receiver: Receiver, **extra: str) -> dict[str, str]:
    """connector_env logged in as the capture's user; the captured servers ran in UTC."""
    settings = {"AMI_USERNAME": USER, "AMI_PASSWORD": SECRET, "ASTERISK_TZ": "UTC", **extra}
    return connector_env(data_dir, ami, receiver, **settings)


def all_sent(db: Path, total: int) -> bool:
    """The outbox holds `total` CDRs and every one is sent."""
    return count_rows(db) == total and count_rows(db, "state = 'sent'") == total
