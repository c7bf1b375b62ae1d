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

from connector.check import (
    CDR_GENERAL,
    CDR_MANAGER_GENERAL,
    MANAGER_GENERAL,
    MANAGER_USERS,
    Status,
    batch_mode_check,
    cdr_status_checks,
    read_classes,
)
from connector.demo.ami_server import AmiUser
from tests.doubles.ami_server import CDR_STATUS_SUSPENDED, FakeAmiServer
from tests.doubles.captured import captured_session, version_folder
from tests.doubles.receiver import Receiver
from tests.paths import ASTERISK_VERSIONS

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
    assert [check.status for check in checks] == [Status.FAIL, Status.FAIL, Status.WARN]
    assert checks[2].detail.startswith("cdr show status has no Mode: line")


ALL_CHECKS = [
    "AMI reachable",
    "AMI TLS",
    "AMI login",
    "AMI read class cdr",
    "CDR logging",
    "cdr_manager backend",
    "CDR batch mode",
    "API reachable",
    "API key",
    "DATA_DIR",
    "recordings",
    "CDR database",
    "CDR database index",
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
    # Nothing is skipped but the CDR database, which this set-up does not use.
    optional = dict.fromkeys(["CDR database", "CDR database index"], "CDR_BACKFILL_DB_URL not set")
    assert {name: detail for name, status, detail in listed(healthy) if status == "skip"} == optional
    skipped = {name: detail for name, status, detail in listed(refused) if status == "skip"}
    assert (
        skipped
        == dict.fromkeys(
            ["AMI read class cdr", "CDR logging", "cdr_manager backend", "CDR batch mode"], "needs AMI login"
        )
        | optional
    )
    skipped = {name: detail for name, status, detail in listed(unreachable) if status == "skip"}
    assert set(skipped) == {"AMI TLS", "AMI login", *ALL_CHECKS[3:7], "API key", *optional}
    assert skipped["AMI login"] == "needs a connection to AMI" and skipped["API key"] == "needs the API"
    skipped = {name: detail for name, status, detail in listed(unset) if status == "skip"}
    assert skipped["AMI login"] == "needs AMI_HOST" and skipped["API reachable"] == "needs API_KEY"
    assert "wrong-secret" not in refused


async def test_the_first_line_shows_the_banner(
    tmp_path: Path, ami: FakeAmiServer, receiver: Receiver
) -> None:
    _, out, _ = await run_check(check_env(tmp_path, ami, receiver))
    assert out.splitlines()[0].endswith("(Asterisk Call Manager/11.0.0)")
    assert "- AMI" not in out  # nothing of AMI skipped
    last = out.splitlines()[-1]
    assert last.startswith(f"{len(ALL_CHECKS)} checks: 0 failed") and last.endswith(
        ", 2 skipped"
    )  # the database


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


def cdr_status(version: str, variant: str = "") -> tuple[str, ...]:
    """The real `cdr show status` answer of a captured Asterisk (fixtures/versions)."""
    return captured_session(version_folder(version, variant)).commands["cdr show status"]


BATCH_WARNING = "up to 100 CDRs or 5 s are held before Asterisk posts them (Mode: Batch)"


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
def test_simple_mode_of_every_version_passes(version: str) -> None:
    checks = cdr_status_checks(cdr_status(version))
    assert [(check.name, check.status) for check in checks] == [
        ("CDR logging", Status.OK),
        ("cdr_manager backend", Status.OK),
        ("CDR batch mode", Status.OK),
    ]
    assert checks[2].detail == "off (Mode: Simple): each CDR is posted when its call ends"


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
def test_batch_mode_of_every_version_warns_with_size_time_cost_and_fix(version: str) -> None:
    logging, backend, batch = cdr_status_checks(cdr_status(version, "batch"))
    assert logging.status is Status.OK and backend.status is Status.OK  # the rest reads the same
    assert batch.status is Status.WARN
    assert batch.detail == (
        f"{BATCH_WARNING}: Cdr events arrive up to 5 s late, and the batch held in memory is lost if "
        "Asterisk crashes (safeshutdown covers only a clean shutdown)"
    )
    assert batch.fix == (
        "set batch = no in /etc/asterisk/cdr.conf [general] (FreePBX: cdr_general_custom.conf), "
        "then: asterisk -rx 'module reload cdr'"
    )


def test_batch_mode_without_safe_shutdown_says_a_clean_shutdown_may_lose_it() -> None:
    text = "\n".join(cdr_status("22.10.1", "batch")).replace("Enabled\n  Threading", "Disabled\n  Threading")
    assert "Safe shutdown:              Disabled" in text
    assert "even a clean shutdown may lose it" in batch_mode_check(text).detail


@pytest.mark.parametrize(("version", "variant", "shown"), [
    ("16.30.1", "", None),
    ("18.26.4", "", None),
    ("20.20.1", "", "No"),
    ("22.10.1", "", "No"),
    ("20.20.1", "cancel", "Yes (a call given up while ringing is CANCEL, not NO ANSWER)"),
    ("22.10.1", "cancel", "Yes (a call given up while ringing is CANCEL, not NO ANSWER)"),
])  # fmt: skip
def test_cdr_logging_says_whether_cancel_disposition_is_on(version: str, variant: str, shown: str) -> None:
    (logging, *_) = cdr_status_checks(cdr_status(version, variant))
    assert logging.status is Status.OK
    suffix = f", Cancel disposition enabled: {shown}" if shown else ""
    assert logging.detail == f"cdr show status: Logging Enabled{suffix}"


async def test_batch_mode_is_a_warning_and_every_check_is_still_listed(
    tmp_path: Path, receiver: Receiver
) -> None:
    commands = {"cdr show status": cdr_status("22.10.1", "batch")}
    async with FakeAmiServer({USER: AmiUser(SECRET)}, commands=commands) as ami:
        code, out, _ = await run_check(check_env(tmp_path, ami, receiver))
        json_code, json_out, _ = await run_check(check_env(tmp_path, ami, receiver), "--json")
    assert code == 0, out  # a warning, not a failure
    assert f"! CDR batch mode: {BATCH_WARNING}: Cdr events arrive up to 5 s late" in out
    assert (
        "    fix: set batch = no in /etc/asterisk/cdr.conf [general] (FreePBX: cdr_general_custom.conf)"
        in out
    )
    last = out.splitlines()[-1]  # (recordings warns too while RECORDING_WATCHER_ENABLED is off)
    assert last.startswith(f"{len(ALL_CHECKS)} checks: 0 failed") and last.endswith(
        ", 2 skipped"
    )  # the database
    assert json_code == 0 and json.loads(json_out)["ok"] is True
    assert [name for name, _, _ in listed(json_out)] == ALL_CHECKS
    (batch,) = (check for check in json.loads(json_out)["checks"] if check["name"] == "CDR batch mode")
    assert batch["status"] == "warn" and batch["detail"].startswith(BATCH_WARNING)
    assert "module reload cdr" in batch["fix"]


async def test_fixes_name_the_freepbx_file_on_one_line(tmp_path: Path, receiver: Receiver) -> None:
    # FreePBX rewrites manager.conf, cdr.conf and cdr_manager.conf; it #includes these files for the admin.
    assert MANAGER_USERS.endswith(" (FreePBX: manager_custom.conf, or Settings > Asterisk Manager Users)")
    assert MANAGER_GENERAL.endswith(" [general] (FreePBX: manager_custom.conf, under [general](+))")
    assert CDR_GENERAL.endswith("cdr.conf [general] (FreePBX: cdr_general_custom.conf)")
    assert CDR_MANAGER_GENERAL.endswith(
        "cdr_manager.conf [general] (FreePBX: cdr_manager_general_custom.conf)"
    )
    suspended_batch = tuple(
        "    cdr_manager (suspended)" if line == "    cdr_manager" else line
        for line in cdr_status("22.10.1", "batch")
    )
    runs = [({"AMI_PASSWORD": "wrong-secret"}, {}), ({"AMI_PORT": "1"}, {}), ({}, {})]
    runs.append(({}, {"cdr show status": suspended_batch}))
    fixes = []
    for extra, commands in runs:
        async with FakeAmiServer({USER: AmiUser(SECRET, frozenset({"system"}))}, commands=commands) as ami:
            _, out, _ = await run_check(check_env(tmp_path, ami, receiver, **extra), "--json")
        fixes += [check["fix"] for check in json.loads(out)["checks"] if check["fix"]]
    named = set()
    for fix in fixes:
        assert "\n" not in fix
        if "/manager.conf" in fix:
            assert MANAGER_USERS in fix or MANAGER_GENERAL in fix, fix
        if "/cdr.conf" in fix:
            assert CDR_GENERAL in fix, fix
        if "/cdr_manager.conf" in fix:
            assert CDR_MANAGER_GENERAL in fix, fix
        named |= {
            place
            for place in (MANAGER_USERS, MANAGER_GENERAL, CDR_GENERAL, CDR_MANAGER_GENERAL)
            if place in fix
        }
    # The login, read-class, reachability, suspended-backend and batch-mode fixes.
    assert len(named) == 4, fixes
