"""deploy/docker-compose.yml (Method A), deploy/.env.example and the README's configuration tables.

The variable lists come from `Settings.model_fields`, so a setting added to connector/config.py fails
these tests until it is documented in both .env.example and README.md.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from connector.app import SHUTDOWN_DEADLINE_S
from connector.config import RUNTIME_REQUIRED, Settings
from tests.deploy.dockerfile import exec_form, parse
from tests.paths import REPO

DEPLOY = REPO / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
ENV_EXAMPLE = DEPLOY / ".env.example"
README = REPO / "README.md"
STATUS = DEPLOY / "status.sh"

VARIABLES = sorted(name.upper() for name in Settings.model_fields)
REQUIRED = {name.upper() for name in RUNTIME_REQUIRED}
ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert list(compose["services"]) == ["connector"]
    return dict(compose["services"]["connector"])


def env_example_lines() -> list[str]:
    return ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()


def env_example_assignments() -> dict[str, tuple[int, bool, str]]:
    """NAME -> (line index, active (not commented out), value) for every assignment, commented or not."""
    found: dict[str, tuple[int, bool, str]] = {}
    for index, line in enumerate(env_example_lines()):
        match = ASSIGNMENT.match(line)
        if match:
            assert match.group(2) not in found, f"{match.group(2)} appears twice in .env.example"
            found[match.group(2)] = (index, match.group(1) is None, match.group(3))
    return found


def shown_default(default: Any) -> str:
    """How a Settings default is written in an env file."""
    if default is None:
        return ""
    if isinstance(default, SecretStr):
        return default.get_secret_value()
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, Enum):
        return str(default.value)
    if isinstance(default, tuple):
        return ",".join(default)
    return str(default)


def same_value(shown: str, expected: str) -> bool:
    try:
        return float(shown) == float(expected)
    except ValueError:
        return shown == expected


# ---- docker-compose.yml --------------------------------------------------------------------------


def test_compose_runs_the_image_built_from_the_repository_dockerfile(service: dict[str, Any]) -> None:
    build = service["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    assert context == REPO
    assert (context / build.get("dockerfile", "Dockerfile")).resolve() == REPO / "Dockerfile"
    assert service["image"]


def test_compose_is_method_a(service: dict[str, Any]) -> None:
    assert service["network_mode"] == "host"
    assert "ports" not in service, "ports are meaningless with the host network"
    env_file = service["env_file"]
    assert env_file in (".env", [".env"])
    assert service["restart"] == "unless-stopped"
    assert service["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "3"}}


def test_compose_volumes(service: dict[str, Any]) -> None:
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    mounts = {volume.split(":")[1]: volume.split(":") for volume in service["volumes"]}
    data = mounts["/data"]
    assert not data[0].startswith(("/", ".")), "the outbox lives in a named volume"
    assert data[0] in compose["volumes"]
    spool = mounts["/var/spool/asterisk"]
    assert spool[0] == "/var/spool/asterisk" and spool[2:] == ["ro"]
    assert str(Settings.model_fields["data_dir"].default) == "/data"
    for path in Settings.model_fields["recording_watch_paths"].default:
        assert Path(path).is_relative_to("/var/spool/asterisk"), "default recordings are inside the mount"


def test_compose_healthcheck_is_the_dockerfiles(service: dict[str, Any]) -> None:
    healthcheck = next(item for item in parse(REPO / "Dockerfile") if item.keyword == "HEALTHCHECK")
    flags, rest = healthcheck.flags_and_rest()
    command = exec_form(rest.removeprefix("CMD").strip())
    assert command is not None
    assert service["healthcheck"]["test"] == ["CMD", *command]
    for name in ("interval", "timeout", "retries"):
        assert str(service["healthcheck"][name]) == flags[name]
    assert service["healthcheck"]["start_period"] == flags["start-period"]


def test_compose_has_no_accidental_interpolation() -> None:
    # Compose expands $NAME everywhere in the file; a literal dollar must be written $$.
    text = COMPOSE.read_text(encoding="utf-8")
    assert not re.search(r"(?<!\$)\$(?!\$)", text.replace("$$", ""))


def test_compose_container_name_is_the_one_status_sh_checks(service: dict[str, Any]) -> None:
    script = STATUS.read_text(encoding="utf-8")
    default = re.search(r"CONTAINER=\$\{CONNECTOR_CONTAINER-([^}]*)\}", script)
    assert default is not None
    assert service["container_name"] == default.group(1)


def test_compose_stop_grace_period_covers_the_shutdown_deadline(service: dict[str, Any]) -> None:
    grace = service["stop_grace_period"]
    # The whole ordered shutdown runs under one deadline; leave room for closing the outbox.
    assert grace.endswith("s") and float(grace[:-1]) >= SHUTDOWN_DEADLINE_S + 5


# ---- .env.example --------------------------------------------------------------------------------


def test_env_example_has_every_setting() -> None:
    missing = sorted(set(VARIABLES) - set(env_example_assignments()))
    assert not missing, f"add to deploy/.env.example: {missing}"


def test_env_example_names_only_real_settings() -> None:
    unknown = sorted(set(env_example_assignments()) - set(VARIABLES))
    assert not unknown, f"not a setting in connector/config.py: {unknown}"
    mentioned = set(
        re.findall(r"\b[A-Z][A-Z0-9]*_[A-Z0-9_]*[A-Z0-9]\b", ENV_EXAMPLE.read_text(encoding="utf-8"))
    )
    assert mentioned <= set(VARIABLES), sorted(mentioned - set(VARIABLES))


def test_env_example_comments_every_variable() -> None:
    lines = env_example_lines()
    for name, (index, _, _) in env_example_assignments().items():
        above = lines[index - 1] if index else ""
        assert above.startswith("# ") and not ASSIGNMENT.match(above), f"{name} needs a comment line above it"


def test_env_example_marks_required_and_shows_defaults() -> None:
    lines = env_example_lines()
    for name, (index, active, value) in env_example_assignments().items():
        if name in REQUIRED:
            assert active, f"{name} is required: leave it uncommented for the user to fill in"
            assert "REQUIRED" in lines[index - 1]
            continue
        assert not active, f"{name}: optional settings stay commented out, showing their default"
        assert "REQUIRED" not in lines[index - 1]
        expected = shown_default(Settings.model_fields[name.lower()].default)
        assert same_value(value, expected), (
            f"{name}: .env.example shows {value!r}, the default is {expected!r}"
        )


def test_env_example_holds_no_secret() -> None:
    assignments = env_example_assignments()
    assert assignments["API_KEY"][2] == "" and assignments["AMI_PASSWORD"][2] == ""


def test_env_example_is_valid_for_the_connector(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Uncomment everything: the shown defaults must all be accepted as they are written.
    text = "\n".join(re.sub(r"^#\s*(?=[A-Z][A-Z0-9_]*=)", "", line) for line in env_example_lines())
    env_file = tmp_path / ".env"
    env_file.write_text(text + "\n", encoding="utf-8")
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=env_file)  # type: ignore[call-arg]
    for name in set(VARIABLES) - REQUIRED:
        field = name.lower()
        assert getattr(settings, field) == Settings.model_fields[field].default, name


# ---- README --------------------------------------------------------------------------------------


def readme_table_variables() -> set[str]:
    text = README.read_text(encoding="utf-8")
    return set(re.findall(r"^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|", text, flags=re.MULTILINE))


def test_readme_documents_every_setting() -> None:
    missing = sorted(set(VARIABLES) - readme_table_variables())
    assert not missing, f"README.md's configuration tables lack: {missing}"


def test_readme_documents_only_real_settings() -> None:
    unknown = sorted(readme_table_variables() - set(VARIABLES))
    assert not unknown, f"README.md documents variables connector/config.py does not read: {unknown}"
