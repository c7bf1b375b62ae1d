"""The Dockerfile: its instructions, its install command and entry point, and its HEALTHCHECK.

No Docker engine runs in CI, so the parts that matter are exercised without one: the instructions are
parsed, the exact install command runs in a clean virtual environment on a copy of what COPY brings in,
and the healthcheck's Python code runs against a real HTTP server.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest

from connector import __version__
from connector.config import Settings
from connector.demo.ports import free_port
from tests.deploy.dockerfile import Instruction, duration, parse
from tests.deploy.health_server import health_server
from tests.paths import REPO

DOCKERFILE = REPO / "Dockerfile"
KNOWN = {
    "FROM", "ENV", "RUN", "WORKDIR", "COPY", "USER", "VOLUME", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT", "CMD",
    "LABEL", "ARG", "STOPSIGNAL",
}  # fmt: skip
# What Docker Engine 20.10's builder accepts on HEALTHCHECK (--start-interval came with Docker 25).
HEALTHCHECK_FLAGS_20_10 = {"interval", "timeout", "start-period", "retries"}


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE)


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    found = [item for item in instructions if item.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {len(found)}"
    return found[0]


def pip_install_run(instructions: list[Instruction]) -> Instruction:
    runs = [item for item in instructions if item.keyword == "RUN" and "pip install" in item.args]
    assert len(runs) == 1
    return runs[0]


def healthcheck_flags(instructions: list[Instruction]) -> dict[str, str]:
    return only(instructions, "HEALTHCHECK").flags_and_rest()[0]


def healthcheck_code(instructions: list[Instruction]) -> list[str]:
    flags, rest = only(instructions, "HEALTHCHECK").flags_and_rest()
    assert set(flags) <= HEALTHCHECK_FLAGS_20_10, "a flag Docker 20.10 does not know fails the build there"
    keyword, _, command = rest.partition(" ")
    assert keyword == "CMD"
    argv = Instruction("CMD", command.strip(), 0).exec_form
    assert argv is not None, "the healthcheck must use the exec form"
    return argv


def test_instructions_parse_and_are_known(instructions: list[Instruction]) -> None:
    assert {item.keyword for item in instructions} <= KNOWN
    first = DOCKERFILE.read_text(encoding="utf-8").splitlines()[0]
    assert not first.lower().replace(" ", "").startswith("#syntax="), "no parser directive: any builder"
    assert [item.args for item in instructions if item.keyword == "FROM"] == ["python:3.11-slim"]
    assert instructions[0].keyword == "FROM"


def test_runs_as_a_non_root_user(instructions: list[Instruction]) -> None:
    users = [item for item in instructions if item.keyword == "USER"]
    assert users, "no USER: the connector would run as root"
    final = users[-1]
    assert final.args not in ("root", "0", "0:0")
    later = instructions[instructions.index(final) :]
    assert not [item for item in later if item.keyword == "RUN"], "RUN after USER would need root"
    created = " ".join(item.args for item in instructions if item.keyword == "RUN")
    assert "useradd" in created and final.args.split(":")[0] in created


def test_installs_the_package_without_editable_mode_or_cache(instructions: list[Instruction]) -> None:
    command = pip_install_run(instructions).args
    assert "pip install --no-cache-dir '.[mysql,postgres]'" in command  # both CDR database drivers
    assert "-e" not in command.split() and "--editable" not in command


def test_copies_only_what_the_build_needs_and_it_exists(instructions: list[Instruction]) -> None:
    copies = [item for item in instructions if item.keyword == "COPY"]
    sources = [src for item in copies for src in item.flags_and_rest()[1].split()[:-1]]
    assert "." not in sources, "COPY . would put the whole tree (tests, .git) in the image"
    assert {"pyproject.toml", "README.md", "connector", "migrations"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source
    install = pip_install_run(instructions)
    assert all(instructions.index(item) < instructions.index(install) for item in copies)


def test_volume_port_entrypoint_and_command(instructions: list[Instruction]) -> None:
    assert only(instructions, "VOLUME").exec_form == ["/data"]
    assert only(instructions, "EXPOSE").args.split() == [
        str(Settings.model_fields["monitoring_port"].default)
    ]
    # Exec form: `connector` is the container's process and gets SIGTERM itself, not through a shell.
    assert only(instructions, "ENTRYPOINT").exec_form == ["connector"]
    assert only(instructions, "CMD").exec_form == ["run"]
    env = only(instructions, "ENV").args
    assert "DATA_DIR=/data" in env
    assert not any(secret in env for secret in ("API_KEY", "AMI_PASSWORD")), "secrets never go in the image"


def test_healthcheck_uses_python_not_curl(instructions: list[Instruction]) -> None:
    argv = healthcheck_code(instructions)
    assert argv[:2] == ["python", "-c"]
    assert "curl" not in argv[2] and "wget" not in argv[2]
    assert "MONITORING_HOST" in argv[2] and "MONITORING_PORT" in argv[2] and "/healthz" in argv[2]


def test_healthcheck_flags_are_known_to_docker_20_10(instructions: list[Instruction]) -> None:
    flags = healthcheck_flags(instructions)
    unknown = sorted(set(flags) - HEALTHCHECK_FLAGS_20_10)
    assert not unknown, f"Docker 20.10's builder rejects these HEALTHCHECK flags: {unknown}"
    assert set(flags) == HEALTHCHECK_FLAGS_20_10, "every timing explicit, not Docker's defaults (30 s)"
    for name in ("interval", "timeout", "start-period"):
        assert duration(flags[name]) > 0, name
    assert int(flags["retries"]) >= 1


def test_healthcheck_reports_healthy_within_10_s_of_start(instructions: list[Instruction]) -> None:
    # Docker < 25 (no --start-interval) runs the first check one interval after start; `compose up
    # --wait` and `condition: service_healthy` wait for it.
    flags = healthcheck_flags(instructions)
    interval, timeout = duration(flags["interval"]), duration(flags["timeout"])
    assert interval <= 5, "the first check would come later than ~5 s after start"
    assert interval + timeout <= 10, "the first check would not be decided within 10 s"
    # Still unhealthy only after a sustained failure: start-up gets slack, then several misses in a row.
    assert duration(flags["start-period"]) >= 30
    assert int(flags["retries"]) * interval >= 30


def http_timeout(instructions: list[Instruction]) -> float:
    timeouts = re.findall(
        r"\bHTTPConnection\([^)]*\btimeout=(\d+(?:\.\d+)?)\)", healthcheck_code(instructions)[2]
    )
    assert len(timeouts) == 1, "the healthcheck's HTTP request needs its own timeout"
    return float(timeouts[0])


def test_healthcheck_http_timeout_is_below_the_docker_timeout(instructions: list[Instruction]) -> None:
    # Under --timeout, so a hung endpoint is reported by the check ("unhealthy: TimeoutError") rather
    # than killed by Docker, with time left for the python process to start.
    docker_timeout = duration(healthcheck_flags(instructions)["timeout"])
    assert 0 < http_timeout(instructions) <= docker_timeout - 1


def test_healthcheck_gives_up_on_a_silent_endpoint_within_its_timeout(
    instructions: list[Instruction],
) -> None:
    # A listening socket nobody accepts: the connection succeeds (backlog), the answer never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        started = time.monotonic()
        result = run_healthcheck(instructions, MONITORING_PORT=str(silent.getsockname()[1]))
        elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert "unhealthy: TimeoutError" in result.stdout
    assert http_timeout(instructions) <= elapsed < duration(healthcheck_flags(instructions)["timeout"])


def run_healthcheck(instructions: list[Instruction], **env: str) -> subprocess.CompletedProcess[str]:
    code = healthcheck_code(instructions)[2]
    clean = {key: value for key, value in os.environ.items() if not key.startswith("MONITORING_")}
    return subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=30
    )


def test_healthcheck_passes_on_a_healthy_connector(instructions: list[Instruction]) -> None:
    with health_server() as server:
        port = str(server.server_address[1])
        for host in ("0.0.0.0", "127.0.0.1", ""):  # a wildcard address is asked on loopback
            result = run_healthcheck(instructions, MONITORING_HOST=host, MONITORING_PORT=port)
            assert result.returncode == 0, result
            assert "healthz: 200" in result.stdout
    assert server.paths == ["/healthz"] * 3


def test_healthcheck_follows_monitoring_host(instructions: list[Instruction]) -> None:
    # 127.0.0.2 is loopback too on Linux: only a check that really uses MONITORING_HOST reaches it.
    with health_server("127.0.0.2") as server:
        port = str(server.server_address[1])
        assert (
            run_healthcheck(instructions, MONITORING_HOST="127.0.0.2", MONITORING_PORT=port).returncode == 0
        )
        assert run_healthcheck(instructions, MONITORING_HOST="0.0.0.0", MONITORING_PORT=port).returncode == 1


def test_healthcheck_on_ipv6_wildcard_asks_ipv6_loopback(instructions: list[Instruction]) -> None:
    with ExitStack() as stack:
        try:
            server = stack.enter_context(health_server("::1"))
        except OSError:
            pytest.skip("no IPv6 loopback here")
        port = str(server.server_address[1])
        assert run_healthcheck(instructions, MONITORING_HOST="::", MONITORING_PORT=port).returncode == 0


def test_healthcheck_defaults_to_the_settings_host_and_port(instructions: list[Instruction]) -> None:
    default = Settings.model_fields["monitoring_port"].default
    assert Settings.model_fields["monitoring_host"].default == "0.0.0.0"
    with ExitStack() as stack:
        try:
            stack.enter_context(health_server(port=default))
        except OSError:
            pytest.skip(f"port {default} is busy here")
        assert run_healthcheck(instructions).returncode == 0


def test_healthcheck_fails_when_unhealthy_or_absent(instructions: list[Instruction]) -> None:
    with health_server(status=503) as server:
        port = str(server.server_address[1])
        result = run_healthcheck(instructions, MONITORING_PORT=port)
        assert result.returncode == 1
        assert "healthz: 503" in result.stdout
    result = run_healthcheck(instructions, MONITORING_PORT=str(free_port()))
    assert result.returncode == 1  # exit 1 is "unhealthy" for Docker (2 is reserved)
    assert "unhealthy: ConnectionRefusedError" in result.stdout
    assert "Traceback" not in result.stderr


def test_healthcheck_is_healthy_when_monitoring_is_disabled(instructions: list[Instruction]) -> None:
    # No endpoint to ask: an unhealthy mark would only restart-loop orchestration for nothing.
    result = run_healthcheck(instructions, MONITORING_ENABLED="false", MONITORING_PORT=str(free_port()))
    assert result.returncode == 0


def copy_build_context(instructions: list[Instruction], context: Path) -> None:
    """Copy what the Dockerfile's COPY instructions take from the repository, and nothing else."""
    for item in instructions:
        if item.keyword != "COPY":
            continue
        *sources, _ = item.flags_and_rest()[1].split()
        for source in sources:
            origin = REPO / source
            if origin.is_dir():
                ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                shutil.copytree(origin, context / source, ignore=ignore)
            else:
                shutil.copy2(origin, context / source)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_install_command_and_entry_point_work_in_a_clean_venv(
    instructions: list[Instruction], tmp_path: Path
) -> None:
    """Run the Dockerfile's exact install command in a new venv (~15-60 s: downloads dependencies)."""
    context, venv, data = tmp_path / "context", tmp_path / "venv", tmp_path / "data"
    context.mkdir()
    data.mkdir()
    copy_build_context(instructions, context)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    install = pip_install_run(instructions).args
    result = subprocess.run(["sh", "-c", install], cwd=context, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert not (context / "build").exists()

    entry = [
        *(only(instructions, "ENTRYPOINT").exec_form or []),
        *(only(instructions, "CMD").exec_form or []),
    ]
    program = shutil.which(entry[0], path=str(venv / "bin"))
    assert program is not None and Path(program).parent == venv / "bin"
    env = {"PATH": env["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}  # no settings, no .env
    version = subprocess.run([program, "--version"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert version.returncode == 0 and __version__ in version.stdout
    usage = subprocess.run([program, "--help"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert usage.returncode == 0 and entry[1] in usage.stdout
    run_help = subprocess.run([program, *entry[1:], "--help"], env=env, cwd=tmp_path, capture_output=True)
    assert run_help.returncode == 0
    # The installed copy, not this checkout, answers: migrations ship inside the package.
    status = subprocess.run(
        [program, "status"], env={**env, "DATA_DIR": str(data)}, cwd=tmp_path, capture_output=True, text=True
    )
    assert status.returncode == 0, status.stderr
    assert str(data / "outbox.db") in status.stdout
    assert (data / "outbox.db").exists()
    where = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import connector; print(connector.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert str(venv) in where.stdout and str(REPO) not in where.stdout
    # The image can recover from FreePBX's MariaDB and from cdr_pgsql: both drivers are installed.
    drivers = [str(venv / "bin" / "python"), "-c", "import asyncmy, asyncpg, greenlet"]
    subprocess.run(drivers, env=env, cwd=tmp_path, capture_output=True, check=True)
