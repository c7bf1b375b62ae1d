"""`connector check` against each Asterisk version's real answers: banner, user, `cdr show status`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.doubles.captured import SECRET, USER, captured_session, version_folder
from tests.doubles.receiver import Receiver
from tests.e2e.harness import API_KEY
from tests.paths import ASTERISK_VERSIONS
from tests.test_check import check_env, run_check, statuses
from tests.versions.helpers import captured_ami

pytestmark = pytest.mark.timeout(120)

AMI_CHECKS = ("AMI reachable", "AMI login", "AMI read class cdr", "CDR logging", "cdr_manager backend")
# fixtures/versions/README.md: what each build said first.
BANNERS = {
    "16.30.1": "Asterisk Call Manager/5.0.5",
    "18.26.4": "Asterisk Call Manager/7.0.3",
    "20.20.1": "Asterisk Call Manager/9.0.0",
    "22.10.1": "Asterisk Call Manager/11.0.0",
}
# Only 20.16+ and 22.6+ print the line (fixtures/versions/README.md, "Differences between the versions").
PRINTS_CANCEL = {"16.30.1": False, "18.26.4": False, "20.20.1": True, "22.10.1": True}


def details(output: str) -> dict[str, str]:
    return {check["name"]: check["detail"] for check in json.loads(output)["checks"]}


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
async def test_every_check_is_right_against_the_real_answers(
    version: str, tmp_path: Path, receiver: Receiver
) -> None:
    session = captured_session(version_folder(version))
    async with captured_ami(version, session) as ami:
        env = check_env(tmp_path, ami, receiver, AMI_USERNAME=USER, AMI_PASSWORD=SECRET, API_KEY=API_KEY)
        code, out, err = await run_check(env)
        json_code, json_out, _ = await run_check(env, "--json")

    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == f"✓ AMI reachable: 127.0.0.1:{ami.port} ({session.banner})"
    assert session.banner == BANNERS[version]
    for name in AMI_CHECKS:
        assert any(line.startswith(f"✓ {name}: ") for line in lines), out
    assert f"✓ AMI login: user '{USER}' logged in" in lines
    assert any(line.startswith("✓ AMI read class cdr: read = ") and ",cdr," in line for line in lines)
    assert "✓ cdr_manager backend: cdr_manager registered and active" in lines
    assert "✗" not in out and SECRET not in out

    assert json_code == 0 and json.loads(json_out)["ok"] is True
    found = statuses(json_out)
    assert {name: found[name] for name in AMI_CHECKS} == dict.fromkeys(AMI_CHECKS, "ok")
    assert "fail" not in found.values()
    said = details(json_out)
    assert said["AMI reachable"].endswith(f"({session.banner})")
    logging = "cdr show status: Logging Enabled"
    cancel = ", Cancel disposition enabled: No"
    assert said["CDR logging"] == (logging + cancel if PRINTS_CANCEL[version] else logging)


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
async def test_a_server_in_batch_mode_fails_no_check(
    version: str, tmp_path: Path, receiver: Receiver
) -> None:
    session = captured_session(version_folder(version, "batch"))
    assert any(re.fullmatch(r"\s*Mode:\s+Batch", line) for line in session.commands["cdr show status"])
    async with captured_ami(version, session) as ami:
        env = check_env(tmp_path, ami, receiver, AMI_USERNAME=USER, AMI_PASSWORD=SECRET, API_KEY=API_KEY)
        code, out, err = await run_check(env, "--json")
        text_code, text, _ = await run_check(env)

    assert code == 0, out + err
    found = statuses(out)
    assert "fail" not in found.values()
    assert found["CDR logging"] != "fail" and found["cdr_manager backend"] == "ok"
    assert details(out)["AMI reachable"].endswith(f"({session.banner})")
    assert text_code == 0 and "✗" not in text
