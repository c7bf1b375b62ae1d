"""`connector check` against the fake AMI server and the loopback receiver, healthy and broken."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme

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


ALL_CHECKS = [
    "AMI reachable",
    "AMI TLS",
    "AMI login",
    "AMI read class cdr",
    "CDR logging",
    "cdr_manager backend",
    "API reachable",
    "API key",
    "DATA_DIR",
    "recordings",
]


def listed(output: str) -> list[tuple[str, str, str]]:
    return [(check["name"], check["status"], check["detail"]) for check in json.loads(output)["checks"]]


async def test_every_check_is_listed_healthy_or_broken(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    _, healthy, _ = await run_check(check_env(tmp_path, ami, receiver), "--json")
    _, refused, _ = await run_check(check_env(tmp_path, ami, receiver, AMI_PASSWORD="wrong-secret"), "--json")
    _, unreachable, _ = await run_check(
        check_env(tmp_path, ami, receiver, AMI_PORT="1", API_BASE_URL="http://127.0.0.1:1/v1"), "--json"
    )
    _, unset, _ = await run_check(check_env(tmp_path, ami, receiver, AMI_HOST="", API_KEY=""), "--json")
    for output in (healthy, refused, unreachable, unset):
        assert [name for name, _, _ in listed(output)] == ALL_CHECKS
    assert all(status != "skip" for _, status, _ in listed(healthy))
    skipped = {name: detail for name, status, detail in listed(refused) if status == "skip"}
    assert skipped == dict.fromkeys(
        ["AMI read class cdr", "CDR logging", "cdr_manager backend"], "needs AMI login"
    )
    skipped = {name: detail for name, status, detail in listed(unreachable) if status == "skip"}
    assert set(skipped) == {"AMI TLS", "AMI login", *ALL_CHECKS[3:6], "API key"}
    assert skipped["AMI login"] == "needs a connection to AMI" and skipped["API key"] == "needs the API"
    skipped = {name: detail for name, status, detail in listed(unset) if status == "skip"}
    assert skipped["AMI login"] == "needs AMI_HOST" and skipped["API reachable"] == "needs API_KEY"
    assert "wrong-secret" not in refused


async def test_the_first_line_shows_the_banner(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    _, out, _ = await run_check(check_env(tmp_path, ami, receiver))
    assert out.splitlines()[0].endswith("(Asterisk Call Manager/11.0.0)")
    assert "- AMI" not in out  # nothing skipped
    last = out.splitlines()[-1]
    assert last.startswith(f"{len(ALL_CHECKS)} checks: 0 failed") and last.endswith(", 0 skipped")


def _tls_server_context(ca: trustme.CA, **validity: datetime) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", common_name="pbx.test", **validity).configure_cert(context)
    return context


async def test_tls_state_is_reported(tmp_path: Path, receiver: Receiver) -> None:
    ca = trustme.CA(organization_name="Check CA")
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    soon = datetime.now(UTC) + timedelta(days=10)
    users = {USER: AmiUser(SECRET)}
    async with FakeAmiServer(users, tls=_tls_server_context(ca)) as ami:
        env = check_env(tmp_path, ami, receiver, AMI_TLS="true", AMI_TLS_CA_FILE=str(ca_file))
        code, out, _ = await run_check(env, "--json")
        (tls,) = (check for check in json.loads(out)["checks"] if check["name"] == "AMI TLS")
        assert code == 0 and tls["status"] == "ok", out
        assert tls["detail"].startswith("TLSv1.") and "commonName=pbx.test" in tls["detail"]
        assert "Check CA" in tls["detail"] and "days)" in tls["detail"]
        assert SECRET not in out
        _, unverified, _ = await run_check({**env, "AMI_TLS_VERIFY": "false"}, "--json")
        assert statuses(unverified)["AMI TLS"] == "warn" and "not verified" in unverified
    async with FakeAmiServer(users, tls=_tls_server_context(ca, not_after=soon)) as ami:
        env = check_env(tmp_path, ami, receiver, AMI_TLS="true", AMI_TLS_CA_FILE=str(ca_file))
        code, out, _ = await run_check(env)
        assert code == 0 and "! AMI TLS" in out and "in 10 days" in out and "renew" in out
    async with FakeAmiServer(users) as plain:
        env = check_env(tmp_path, plain, receiver, AMI_TLS="true", AMI_TLS_CA_FILE=str(ca_file))
        code, out, _ = await run_check(env, "--json")
        assert code == 1 and statuses(out)["AMI TLS"] == "fail" and "did not answer TLS" in out
        assert statuses(out)["AMI login"] == "skip" and SECRET not in out
