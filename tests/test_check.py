"""`connector check` against the fake AMI server and the loopback receiver, healthy and broken."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from connector.check import Status, cdr_status_checks, read_classes
from connector.demo.ami_server import AmiUser
from tests.doubles.ami_server import CDR_STATUS_SUSPENDED, FakeAmiServer
from tests.doubles.receiver import Receiver

KEY = "sk_" + "c" * 32
USER, SECRET = "sipstack", "right-secret"


@pytest.fixture
async def ami() -> AsyncIterator[FakeAmiServer]:
    async with FakeAmiServer({USER: AmiUser(SECRET, frozenset({"cdr", "system"}))}) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(api_key=KEY) as running:
        yield running


def check_env(tmp_path: Path, ami: FakeAmiServer, receiver: Receiver, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AMI_", "API_"))}
    env.update(
        DATA_DIR=str(tmp_path),
        AMI_HOST="127.0.0.1",
        AMI_PORT=str(ami.port),
        AMI_USERNAME=USER,
        AMI_PASSWORD=SECRET,
        API_KEY=KEY,
        API_BASE_URL=receiver.base_url,
    )
    env.update(extra)
    return env


async def run_check(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector",
        "check",
        *args,
        env=env,
        cwd=env["DATA_DIR"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def statuses(output: str) -> dict[str, str]:
    return {check["name"]: check["status"] for check in json.loads(output)["checks"]}


async def test_a_healthy_setup_passes_every_check(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    code, out, err = await run_check(check_env(tmp_path, ami, receiver))
    assert code == 0, out + err
    for name in ("AMI reachable", "AMI login", "AMI read class cdr", "CDR logging", "API key", "DATA_DIR"):
        assert f"✓ {name}" in out
    assert "\033[" not in out  # no colour when stdout is not a terminal
    assert SECRET not in out and KEY not in out

    code, out, _ = await run_check(check_env(tmp_path, ami, receiver), "--json")
    assert code == 0
    assert json.loads(out)["ok"] is True
    assert statuses(out)["cdr_manager backend"] == "ok"


async def test_a_bad_secret_fails_the_login_with_the_fix_and_goes_on(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    env = check_env(tmp_path, ami, receiver, AMI_PASSWORD="wrong-secret")
    code, out, _ = await run_check(env)
    assert code == 1
    assert "✗ AMI login" in out and "manager reload" in out
    assert "✓ API key" in out and "✓ DATA_DIR" in out  # later checks still ran
    assert "wrong-secret" not in out


async def test_a_user_without_the_cdr_read_class_fails(tmp_path: Path, receiver: Receiver) -> None:
    async with FakeAmiServer({USER: AmiUser(SECRET, frozenset({"system", "call"}))}) as ami:
        code, out, _ = await run_check(check_env(tmp_path, ami, receiver), "--json")
    assert code == 1
    checks = json.loads(out)["checks"]
    failed = next(check for check in checks if check["name"] == "AMI read class cdr")
    assert failed["status"] == "fail" and "read=" in failed["fix"]


async def test_a_suspended_cdr_manager_fails(tmp_path: Path, receiver: Receiver) -> None:
    users = {USER: AmiUser(SECRET)}
    async with FakeAmiServer(users, commands={"cdr show status": CDR_STATUS_SUSPENDED}) as ami:
        code, out, _ = await run_check(check_env(tmp_path, ami, receiver))
    assert code == 1
    assert "✗ cdr_manager backend" in out and "(suspended)" in out
    assert "module reload cdr_manager.so" in out


async def test_an_api_refusing_the_key_fails(tmp_path: Path, ami: FakeAmiServer, receiver: Receiver) -> None:
    receiver.refuse_key(True)
    code, out, _ = await run_check(check_env(tmp_path, ami, receiver), "--json")
    assert code == 1
    assert statuses(out)["API key"] == "fail"
    assert statuses(out)["API reachable"] == "ok"
    (key,) = (check for check in json.loads(out)["checks"] if check["name"] == "API key")
    # The API client's one-line text, said once (it read `HTTP 401: HTTP 401 Unauthorized` before).
    assert key["detail"].startswith("refused (HTTP 401 Unauthorized")
    assert key["detail"].count("401") == 1


async def test_nothing_reachable_reports_every_failure(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMI_", "API_"))}
    env.update(
        DATA_DIR=str(tmp_path / "missing"),
        AMI_HOST="127.0.0.1",
        AMI_PORT="1",
        AMI_USERNAME=USER,
        AMI_PASSWORD=SECRET,
        API_KEY=KEY,
        API_BASE_URL="http://127.0.0.1:1/v1",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "connector",
        "check",
        "--json",
        env=env,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1
    found = statuses(out.decode())
    assert found["AMI reachable"] == "fail"
    assert found["API reachable"] == "fail"
    assert found["DATA_DIR"] == "fail"


def test_read_classes_parses_manager_show_user() -> None:
    lines = ["", "          username: sipstack", "         read perm: system,cdr", "        write perm: x"]
    assert read_classes(lines) == ["system", "cdr"]
    assert read_classes(["There is no manager called x"]) is None


def test_cdr_status_without_logging_fails() -> None:
    lines = ["Call Detail Record (CDR) settings", "  Logging:                    Disabled"]
    checks = cdr_status_checks(lines)
    assert [check.status for check in checks] == [Status.FAIL, Status.FAIL]
