"""Settings: defaults, .env, lists, booleans, one line per problem, secrets never echoed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from connector.backfill.follower import CsvFollower
from connector.backfill.lines import check_layout
from connector.config import load_settings, load_store_settings
from connector.errors import ConfigError
from connector.outbox.store import Store
from tests.conftest import CliRunner

SECRET_KEY = "sk_" + "LEAK" * 7 + "LEA"  # 31 characters after sk_: invalid
VALID_KEY = "sk_" + "Zq9" * 10 + "Zq"
PASSWORD = "Pa55-LEAK-word"

DEFAULTS: dict[str, Any] = {
    "api_key": None,
    "ami_host": "",
    "ami_username": "",
    "ami_password": None,
    "region": "us1",
    "ami_port": 5038,
    "log_level": "INFO",
    "cdr_mode": "batch",
    "cdr_batch_size": 100,
    "cdr_batch_timeout": 30,
    "cdr_batch_force_timeout": 5,
    "cdr_max_concurrent": 10,
    "cdr_filter_enabled": True,
    "cdr_filter_queue_attempts": False,
    "cdr_filter_zero_duration": False,
    "cdr_filter_internal_only": False,
    "cdr_filter_min_duration": 0,
    "cdr_filter_exclude_dst": ("h",),
    "monitoring_enabled": True,
    "monitoring_port": 8000,
    "monitoring_host": "0.0.0.0",
    "recording_watcher_enabled": False,
    "recording_watch_paths": ("/var/spool/asterisk/monitor",),
    "recording_file_extensions": (".wav", ".mp3", ".gsm"),
    "recording_min_file_size": 1024,
    "recording_stabilization_time": 2.0,
    "recording_process_existing": False,
    "recording_delete_after_upload": False,
    "recording_include_patterns": (),
    "recording_exclude_patterns": (),
    "recording_min_duration": 0,
    "recording_max_age_hours": 24,
    "api_base_url": "",
    "api_timeout": 30,
    "data_dir": Path("/data"),
    "host_hostname": "",
    "asterisk_tz": "",
    "ami_tls": False,
    "ami_tls_ca_file": None,
    "ami_tls_verify": True,
    "outbox_retention_days": 7,
}


def test_defaults(clean_env: Path) -> None:
    settings = load_settings()
    assert {name: getattr(settings, name) for name in DEFAULTS} == DEFAULTS
    assert settings.api_url == "https://api-us1.sipstack.com/v1"
    assert settings.outbox_path == Path("/data/outbox.db")
    assert settings.hostname  # this host's name


def test_region_and_base_url(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGION", "CA1")
    assert load_settings().api_url == "https://api-ca1.sipstack.com/v1"
    monkeypatch.setenv("API_BASE_URL", "http://127.0.0.1:9000/v1/")
    assert load_settings().api_url == "http://127.0.0.1:9000/v1"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("REGION", "eu9", "REGION: invalid value; expected one of ca1, us1, us2"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL: invalid value; expected one of DEBUG, INFO, WARNING, ERROR"),
        ("CDR_MODE", "stream", "CDR_MODE: invalid value; expected batch or direct"),
        ("CDR_FILTER_ENABLED", "maybe", "CDR_FILTER_ENABLED: not a boolean; use true/false, 1/0 or yes/no"),
        ("AMI_PORT", "five", "AMI_PORT: input should be a valid integer"),
        ("CDR_BATCH_TIMEOUT", "soon", "CDR_BATCH_TIMEOUT: input should be a valid number"),
        ("AMI_PORT", "70000", "AMI_PORT: input should be less than or equal to 65535"),
        ("CDR_BATCH_SIZE", "0", "CDR_BATCH_SIZE: input should be greater than or equal to 1"),
        ("OUTBOX_RETENTION_DAYS", "0", "OUTBOX_RETENTION_DAYS: input should be greater than 0"),
        ("API_KEY", "sk_short", "API_KEY: must be 'sk_' followed by 32 letters or digits"),
        ("API_BASE_URL", "ftp://example.com", "API_BASE_URL: must be an http:// or https:// URL"),
        ("ASTERISK_TZ", "Mars/Olympus", "ASTERISK_TZ: must be an IANA time zone name"),
        ("CDR_INTERNAL_PATTERN", "[0-9", "CDR_INTERNAL_PATTERN: is not a valid regular expression"),
        ("AMI_TLS", "sometimes", "AMI_TLS: not a boolean; use true/false, 1/0 or yes/no"),
        ("AMI_TLS_CA_FILE", "/no/such/ca.pem", "AMI_TLS_CA_FILE: /no/such/ca.pem does not exist"),
        ("AMI_TLS_CA_FILE", "/etc/hostname", "AMI_TLS_CA_FILE: /etc/hostname cannot be read as PEM CA"),
    ],
)
def test_each_kind_of_bad_value_has_its_one_line_message(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    (problem,) = caught.value.problems
    assert problem.startswith(expected)
    assert "\n" not in problem


def test_number_messages_say_the_expected_form(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMI_PORT", "five")
    with pytest.raises(ConfigError, match="use a plain number"):
        load_settings()


def test_missing_runtime_variables_are_listed_together(clean_env: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(require_runtime=True)
    assert caught.value.problems == [
        "API_KEY: required but not set ('sk_' followed by 32 letters or digits)",
        "AMI_HOST: required but not set",
        "AMI_USERNAME: required but not set",
        "AMI_PASSWORD: required but not set",
    ]


def test_all_bad_values_are_reported_at_once(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = {"REGION": "eu9", "AMI_PORT": "x", "CDR_FILTER_ZERO_DURATION": "2", "ASTERISK_TZ": "Nowhere/None"}
    for name, value in bad.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert sorted(problem.split(":")[0] for problem in caught.value.problems) == sorted(bad)


def test_bad_values_and_missing_variables_are_reported_together(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMI_PORT", "x")
    with pytest.raises(ConfigError) as caught:
        load_settings(require_runtime=True)
    named = {problem.split(":")[0] for problem in caught.value.problems}
    assert named == {"AMI_PORT", "API_KEY", "AMI_HOST", "AMI_USERNAME", "AMI_PASSWORD"}


def test_dotenv_in_the_working_directory_is_read_and_the_environment_wins(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text("REGION=ca1\nAMI_HOST=from-file\n# a comment\nUNRELATED=1\n")
    monkeypatch.setenv("AMI_HOST", "from-environment")
    settings = load_settings()
    assert settings.region == "ca1"
    assert settings.ami_host == "from-environment"


def test_a_bad_value_in_dotenv_is_reported(clean_env: Path) -> None:
    (clean_env / ".env").write_text("MONITORING_PORT=eighty\n")
    with pytest.raises(ConfigError, match=r"^MONITORING_PORT: input should be a valid integer"):
        load_settings()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a,b", ("a", "b")),
        (" a , b ", ("a", "b")),
        ("a,,b,", ("a", "b")),
        (" , ,", ()),
        ("", ()),
    ],
)
def test_comma_lists_tolerate_spaces_and_empty_items(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: tuple[str, ...]
) -> None:
    monkeypatch.setenv("CDR_FILTER_EXCLUDE_DST", value)
    monkeypatch.setenv("RECORDING_INCLUDE_PATTERNS", value)
    settings = load_settings()
    assert settings.cdr_filter_exclude_dst == expected
    assert settings.recording_include_patterns == expected


def test_extensions_are_lowercased_and_dotted(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECORDING_FILE_EXTENSIONS", " WAV, .mp3,, ogg ")
    assert load_settings().recording_file_extensions == (".wav", ".mp3", ".ogg")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("false", False),
        ("1", True),
        ("0", False),
        ("yes", True),
        ("no", False),
        ("TRUE", True),
        ("No", False),
    ],
)
def test_booleans(clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("RECORDING_WATCHER_ENABLED", value)
    monkeypatch.setenv("CDR_FILTER_ENABLED", value)
    settings = load_settings()
    assert settings.recording_watcher_enabled is expected
    assert settings.cdr_filter_enabled is expected


def test_an_invalid_api_key_is_never_echoed(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", SECRET_KEY)
    monkeypatch.setenv("AMI_PASSWORD", PASSWORD)
    monkeypatch.setenv("AMI_PORT", "x")
    with pytest.raises(ConfigError) as caught:
        load_settings(require_runtime=True)
    shown = f"{caught.value}{caught.value!r}{caught.value.problems}{caught.value.__cause__!r}"
    assert "API_KEY" in shown
    assert "LEAK" not in shown


def test_valid_secrets_stay_hidden_in_settings(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_KEY", VALID_KEY)
    monkeypatch.setenv("AMI_PASSWORD", PASSWORD)
    settings = load_settings()
    assert settings.api_key is not None and settings.api_key.get_secret_value() == VALID_KEY
    shown = f"{settings}{settings!r}{settings.redacted()}"
    assert VALID_KEY not in shown
    assert PASSWORD not in shown
    assert settings.redacted()["api_key"] == settings.redacted()["ami_password"] == "***"


def test_store_commands_need_only_data_dir(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATA_DIR", "/srv/connector")
    monkeypatch.setenv("API_KEY", "not a key")  # invalid, but the outbox commands do not read it
    assert load_store_settings().outbox_path == Path("/srv/connector/outbox.db")


# -- as the user meets them: subprocesses --------------------------------------------------------


def _assert_config_failure(result: subprocess.CompletedProcess[str], *variables: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert all(line.startswith("configuration error: ") for line in lines), lines
    for variable in variables:
        assert any(line.startswith(f"configuration error: {variable}: ") for line in lines), lines


@pytest.mark.parametrize("command", ["run", "check"])
def test_bad_configuration_exits_2_without_traceback_or_secrets(
    run_connector: CliRunner, data_dir: Path, command: str
) -> None:
    env = {
        "DATA_DIR": str(data_dir),
        "API_KEY": SECRET_KEY,
        "AMI_PASSWORD": PASSWORD,
        "AMI_HOST": "pbx",
        "AMI_USERNAME": "connector",
        "AMI_PORT": "x",
        "REGION": "mars",
    }
    result = run_connector(command, env=env)
    _assert_config_failure(result, "API_KEY", "AMI_PORT", "REGION")
    assert "LEAK" not in result.stdout + result.stderr


def test_bad_secrets_in_dotenv_are_not_echoed(
    run_connector: CliRunner, data_dir: Path, tmp_path: Path
) -> None:
    workdir = tmp_path / "service"
    workdir.mkdir()
    (workdir / ".env").write_text(f"API_KEY={SECRET_KEY}\nAMI_PASSWORD={PASSWORD}\nAMI_HOST=pbx\n")
    result = run_connector("run", env={"DATA_DIR": str(data_dir), "AMI_USERNAME": "u"}, cwd=workdir)
    _assert_config_failure(result, "API_KEY")
    assert "LEAK" not in result.stdout + result.stderr


def test_status_with_a_bad_log_level_exits_2(run_connector: CliRunner, data_dir: Path) -> None:
    result = run_connector("status", env={"DATA_DIR": str(data_dir), "LOG_LEVEL": "chatty"})
    _assert_config_failure(result, "LOG_LEVEL")
    assert not (data_dir / "outbox.db").exists()


@pytest.mark.parametrize("command", ["status", "resend", "purge", "migrate"])
def test_outbox_commands_work_with_only_data_dir(
    run_connector: CliRunner, data_dir: Path, command: str
) -> None:
    result = run_connector(command, env={"DATA_DIR": str(data_dir)})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_a_running_connector_logs_its_settings_without_secrets(data_dir: Path, tmp_path: Path) -> None:
    environ = {
        key: value for key, value in os.environ.items() if key.upper() not in {"API_KEY", "AMI_PASSWORD"}
    }
    environ |= {
        "DATA_DIR": str(data_dir),
        "API_KEY": VALID_KEY,
        "AMI_HOST": "127.0.0.1",
        "AMI_PORT": "9",  # discard: nothing answers, the connector keeps retrying
        "AMI_USERNAME": "connector",
        "AMI_PASSWORD": PASSWORD,
        "MONITORING_ENABLED": "false",
        "API_BASE_URL": "http://127.0.0.1:9/v1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "connector", "run"],
        env=environ,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    line = process.stderr.readline()
    assert "starting with" in line, line
    time.sleep(0.5)  # let it try AMI and log about it
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    shown = line + out + err
    assert "'api_key': '***'" in shown
    assert VALID_KEY not in shown
    assert PASSWORD not in shown


# ---- gap recovery: CDR_BACKFILL_CSV_GMT and the CDR_BACKFILL_COLUMNS presets ---------------------


@pytest.mark.parametrize(("value", "expected"), [("", False), ("yes", True), ("1", True), ("false", False)])
def test_backfill_csv_gmt(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str, expected: bool
) -> None:
    assert load_settings().cdr_backfill_csv_gmt is False  # the default: usegmtime = no
    if value:
        monkeypatch.setenv("CDR_BACKFILL_CSV_GMT", value)
        assert load_settings().cdr_backfill_csv_gmt is expected


def test_a_bad_backfill_csv_gmt_is_one_line(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDR_BACKFILL_CSV_GMT", "utc")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.problems == ["CDR_BACKFILL_CSV_GMT: not a boolean; use true/false, 1/0 or yes/no"]


@pytest.mark.parametrize(
    ("preset", "columns"), [("csv", 18), ("csv-newcdrcolumns", 21), ("CSV-NEWCDRCOLUMNS", 21)]
)
async def test_backfill_column_presets(clean_env: Path, data_dir: Path, preset: str, columns: int) -> None:
    settings = load_settings(
        data_dir=str(data_dir), cdr_backfill_csv="/x/Master.csv", cdr_backfill_columns=preset
    )
    store = await Store.open(settings.outbox_path)
    try:
        follower = CsvFollower.from_settings(settings, store)
        assert follower is not None
        follower.close()
    finally:
        await store.close()
    assert len(check_layout(settings.cdr_backfill_columns)) == columns


def test_a_bad_backfill_layout_is_one_line_naming_the_presets(
    run_connector: CliRunner, data_dir: Path
) -> None:
    env = {
        "DATA_DIR": str(data_dir),
        "API_KEY": VALID_KEY,
        "AMI_PASSWORD": PASSWORD,
        "AMI_HOST": "127.0.0.1",
        "AMI_USERNAME": "connector",
        "MONITORING_ENABLED": "false",
        "CDR_BACKFILL_CSV": str(data_dir / "Master.csv"),
        "CDR_BACKFILL_COLUMNS": "csv-newcolumns",
    }
    result = run_connector("run", env=env)
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if "CDR_BACKFILL_COLUMNS" in line]
    assert line.startswith("configuration error: CDR_BACKFILL_COLUMNS: unknown CDR field 'csv-newcolumns'")
    assert "use a preset (csv, csv-newcdrcolumns)" in line
    assert "Traceback" not in result.stderr


# ---- gap recovery from the CDR database: CDR_BACKFILL_DB_* ---------------------------------------


def test_backfill_db_defaults(clean_env: Path) -> None:
    settings = load_settings()
    assert settings.cdr_backfill_db_url.get_secret_value() == ""
    assert (settings.cdr_backfill_db_table, settings.cdr_backfill_db_poll) == ("cdr", 10.0)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "is not a database URL; use e.g. mysql+asyncmy://"),
        ("sqlite:///cdr.db", "'sqlite' is not supported"),
        ("mysql://u:topsecret@h/asteriskcdrdb", "needs an asyncio driver: mysql+asyncmy://"),
        ("postgresql+pg8000://u:topsecret@h/asterisk", "needs an asyncio driver: postgresql+asyncpg://"),
        ("mysql+asyncmy://u:topsecret@h", "names no database"),
    ],
)
def test_a_bad_backfill_db_url_is_one_line_without_the_password(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, url: str, message: str
) -> None:
    monkeypatch.setenv("CDR_BACKFILL_DB_URL", url)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    (problem,) = caught.value.problems
    assert problem.startswith("CDR_BACKFILL_DB_URL: ") and message in problem
    assert "topsecret" not in problem and "\n" not in problem


def test_a_good_backfill_db_url_and_table(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDR_BACKFILL_DB_URL", " mysql+asyncmy://connector:pw@pbx/asteriskcdrdb ")
    monkeypatch.setenv("CDR_BACKFILL_DB_TABLE", "cdr")
    settings = load_settings()
    assert settings.cdr_backfill_db_url.get_secret_value() == "mysql+asyncmy://connector:pw@pbx/asteriskcdrdb"
    assert "pw" not in repr(settings.cdr_backfill_db_url)
    monkeypatch.setenv("CDR_BACKFILL_DB_TABLE", "cdr; DROP TABLE cdr")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    expected = "CDR_BACKFILL_DB_TABLE: must be a table name such as cdr (or schema.cdr)"
    assert caught.value.problems == [expected]
