"""Settings: every environment variable the connector reads, with defaults and validation.

The variable names are the public interface. Values come from the environment, plus a `.env` file
in the working directory when present (the environment wins). Problems are reported all at once,
one line per variable, without ever echoing a secret (see `load_settings`).
"""

from __future__ import annotations

import re
import socket
import ssl
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from connector.ami.tls import client_context
from connector.errors import ConfigError
from connector.timeutil import parse_iso

API_KEY_PATTERN = re.compile(r"^sk_[A-Za-z0-9]{32}$")
SECRET_FIELDS = frozenset({"api_key", "ami_password"})
# Needed by `run` and `check`; `status`, `resend`, `purge` and `migrate` work without them.
RUNTIME_REQUIRED = ("api_key", "ami_host", "ami_username", "ami_password")

CommaList = Annotated[tuple[str, ...], NoDecode]


class Region(StrEnum):
    """The regional API endpoints."""

    CA1 = "ca1"
    US1 = "us1"
    US2 = "us2"


class LogLevel(StrEnum):
    """Accepted LOG_LEVEL values."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class LogFormat(StrEnum):
    """Accepted LOG_FORMAT values."""

    TEXT = "text"
    JSON = "json"


class CdrMode(StrEnum):
    """How CDRs are posted: many per request, or one per request."""

    BATCH = "batch"
    DIRECT = "direct"


def split_comma_list(value: Any) -> tuple[str, ...]:
    """Split `a, b,,c` into ('a', 'b', 'c'); spaces and empty items are tolerated."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return tuple(str(item).strip() for item in value if str(item).strip())


class StoreSettings(BaseSettings):
    """What the outbox commands (status, resend, purge, migrate) need: DATA_DIR and logging."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        case_sensitive=False,
        extra="ignore",
        validate_default=True,
        allow_inf_nan=False,  # API_TIMEOUT=inf or nan would silently disable a limit
    )

    data_dir: Path = Path("/data")
    outbox_retention_days: float = Field(7, gt=0)
    log_level: LogLevel = LogLevel.INFO
    log_format: LogFormat = LogFormat.TEXT

    @field_validator("log_format", mode="before")
    @classmethod
    def _lowercase_format(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _uppercase(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("data_dir", mode="before")
    @classmethod
    def _data_dir_given(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise ValueError("is empty; give the folder of the outbox, e.g. /data")
        return value

    @property
    def outbox_path(self) -> Path:
        """Where the SQLite outbox lives."""
        return self.data_dir / "outbox.db"

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain values, secrets replaced by '***'."""
        shown: dict[str, Any] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if name in SECRET_FIELDS:
                shown[name] = "***" if value is not None else ""
            elif isinstance(value, Enum):
                shown[name] = value.value
            elif isinstance(value, tuple):
                shown[name] = ",".join(value)
            else:
                shown[name] = str(value) if isinstance(value, Path) else value
        return shown


class Settings(StoreSettings):
    """The connector's whole configuration, read from environment variables."""

    # Core
    api_key: SecretStr | None = None
    ami_host: str = ""
    ami_username: str = ""
    ami_password: SecretStr | None = None
    region: Region = Region.US1
    ami_port: int = Field(5038, ge=1, le=65535)
    ami_tls: bool = False
    ami_tls_ca_file: Path | None = None
    ami_tls_verify: bool = True

    # CDR processing
    cdr_mode: CdrMode = CdrMode.BATCH
    cdr_batch_size: int = Field(100, ge=1, le=10_000)
    cdr_batch_timeout: float = Field(30.0, gt=0)
    cdr_batch_force_timeout: float = Field(5.0, gt=0)
    cdr_max_concurrent: int = Field(10, ge=1, le=1000)

    # CDR filtering
    cdr_filter_enabled: bool = True
    cdr_filter_queue_attempts: bool = False
    cdr_filter_zero_duration: bool = False
    cdr_filter_internal_only: bool = False
    cdr_filter_min_duration: int = Field(0, ge=0)
    cdr_filter_exclude_dst: CommaList = ("h",)
    cdr_internal_pattern: str = r"^[0-9]{2,6}$"

    # Gap recovery from Asterisk's CSV CDR backends
    cdr_backfill_csv: str = ""
    cdr_backfill_columns: str = "csv"
    cdr_backfill_from: str = "end"
    # cdr.conf [csv] usegmtime: Master.csv times in UTC, converted to ASTERISK_TZ for the identity.
    cdr_backfill_csv_gmt: bool = False
    # Gap recovery from the CDR database (FreePBX's MariaDB, cdr_pgsql): connector.backfill.database
    cdr_backfill_db_url: SecretStr = SecretStr("")
    cdr_backfill_db_table: str = "cdr"
    cdr_backfill_db_poll: float = Field(10.0, gt=0)

    # Monitoring
    monitoring_enabled: bool = True
    monitoring_port: int = Field(8000, ge=1, le=65535)
    monitoring_host: str = "0.0.0.0"

    # Recordings
    recording_watcher_enabled: bool = False
    recording_watch_paths: CommaList = ("/var/spool/asterisk/monitor",)
    recording_file_extensions: CommaList = (".wav", ".mp3", ".gsm")
    recording_min_file_size: int = Field(1024, ge=0)
    recording_stabilization_time: float = Field(2.0, ge=0)
    recording_process_existing: bool = False
    recording_delete_after_upload: bool = False
    recording_include_patterns: CommaList = ()
    recording_exclude_patterns: CommaList = ()
    recording_min_duration: float = Field(0, ge=0)
    recording_max_age_hours: float = Field(24, gt=0)
    recording_upload_concurrency: int = Field(2, ge=1)
    recording_cdr_wait_seconds: float = Field(60.0, ge=0)

    # Ours
    api_base_url: str = ""
    api_timeout: float = Field(30.0, gt=0)
    host_hostname: str = ""
    asterisk_tz: str = ""
    # Retention in `connector run` (OUTBOX_RETENTION_DAYS is read by StoreSettings, for `purge` too)
    outbox_purge_interval: float = Field(3600.0, gt=0)
    outbox_max_mb: float = 1024.0

    @field_validator(
        "cdr_filter_exclude_dst",
        "recording_watch_paths",
        "recording_file_extensions",
        "recording_include_patterns",
        "recording_exclude_patterns",
        mode="before",
    )
    @classmethod
    def _split_lists(cls, value: Any) -> tuple[str, ...]:
        return split_comma_list(value)

    @field_validator("recording_file_extensions")
    @classmethod
    def _dotted_extensions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in value)

    @field_validator("region", "cdr_mode", mode="before")
    @classmethod
    def _lowercase(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("api_key", "ami_password", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("api_key")
    @classmethod
    def _api_key_format(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not API_KEY_PATTERN.match(value.get_secret_value()):
            raise ValueError("must be 'sk_' followed by 32 letters or digits (35 characters)")
        return value

    @field_validator("api_base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL, e.g. https://api-us1.sipstack.com/v1")
        return value

    @field_validator("asterisk_tz")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        value = value.strip()
        if value:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(
                    "must be an IANA time zone name such as Europe/Paris or America/Toronto"
                ) from None
        return value

    @field_validator("cdr_backfill_from")
    @classmethod
    def _backfill_start(cls, value: str) -> str:
        value = value.strip().lower() or "end"
        if value in ("end", "start"):
            return value
        try:
            parse_iso(value)
        except ValueError:
            raise ValueError("must be end, start, or an ISO date such as 2026-11-01") from None
        return value

    @field_validator("cdr_backfill_db_url")
    @classmethod
    def _database_url(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value().strip()
        if text:
            # Imported here: SQLAlchemy's URL parser only when the setting is used.
            from connector.backfill.database import check_url

            check_url(text)  # ValueError with the fix, never the URL itself (it holds a password)
        return SecretStr(text)

    @field_validator("cdr_backfill_db_table")
    @classmethod
    def _table_name(cls, value: str) -> str:
        value = value.strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?", value):
            raise ValueError("must be a table name such as cdr (or schema.cdr)")
        return value

    @field_validator("ami_tls_ca_file", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ami_tls_ca_file")
    @classmethod
    def _readable_ca_bundle(cls, value: Path | None) -> Path | None:
        if value is not None:
            try:
                client_context(value, verify=True)
            except FileNotFoundError:
                raise ValueError(
                    f"{value} does not exist; give the PEM file of the CA that signed Asterisk's tlscertfile"
                ) from None
            except (OSError, ssl.SSLError) as error:
                reason = getattr(error, "reason", None) or error.strerror or error
                raise ValueError(f"{value} cannot be read as PEM CA certificates ({reason})") from None
        return value

    @field_validator("outbox_max_mb")
    @classmethod
    def _size_bound(cls, value: float) -> float:
        if value < 0:
            raise ValueError("must be 0 (no bound) or a size in MB, e.g. 1024")
        return value

    @field_validator("cdr_internal_pattern")
    @classmethod
    def _valid_regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"is not a valid regular expression ({error})") from None
        return value

    @property
    def api_url(self) -> str:
        """The API base URL: API_BASE_URL when set, else the regional URL."""
        return self.api_base_url or f"https://api-{self.region.value}.sipstack.com/v1"

    @property
    def ami_tls_context(self) -> ssl.SSLContext | None:
        """The TLS context for AMI when AMI_TLS is on (the CA file was checked at load)."""
        if not self.ami_tls:
            return None
        return client_context(self.ami_tls_ca_file, self.ami_tls_verify)

    @property
    def hostname(self) -> str:
        """The name sent as X-Asterisk-Hostname."""
        return self.host_hostname or socket.gethostname()


_EXPECTED: dict[str, str] = {
    "region": "one of ca1, us1, us2",
    "log_level": "one of DEBUG, INFO, WARNING, ERROR",
    "log_format": "text or json",
    "cdr_mode": "batch or direct",
}


def _describe(error: Any) -> str:
    """One line for one pydantic error, never including the offending value of a secret."""
    field = str(error["loc"][0]) if error["loc"] else "?"
    variable = field.upper()
    kind = error["type"]
    if field in _EXPECTED:
        return f"{variable}: invalid value; expected {_EXPECTED[field]}"
    if kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
        return f"{variable}: {message}"
    if kind.startswith("bool"):
        return f"{variable}: not a boolean; use true/false, 1/0 or yes/no"
    if kind == "finite_number":
        return f"{variable}: must be a finite number"
    if kind.startswith(("int", "float")):
        return f"{variable}: {error['msg'].lower()}; use a plain number"
    if kind.startswith(("greater", "less")):
        return f"{variable}: {error['msg'].lower()}"
    return f"{variable}: {error['msg']}"


def load_store_settings(**overrides: Any) -> StoreSettings:
    """Read only what the outbox commands need; raise ConfigError listing every problem."""
    try:
        return StoreSettings(**overrides)
    except ValidationError as error:
        raise ConfigError([_describe(item) for item in error.errors(include_input=False)]) from None


class _RuntimeRequired(BaseSettings):
    """Only the variables `run` and `check` cannot do without, read the same way as Settings."""

    model_config = StoreSettings.model_config

    api_key: str = ""
    ami_host: str = ""
    ami_username: str = ""
    ami_password: str = ""


def _missing_runtime(overrides: dict[str, Any]) -> list[str]:
    present = _RuntimeRequired(**{k: v for k, v in overrides.items() if k in RUNTIME_REQUIRED})
    problems = []
    for name in RUNTIME_REQUIRED:
        if not str(getattr(present, name)).strip():
            hint = " ('sk_' followed by 32 letters or digits)" if name == "api_key" else ""
            problems.append(f"{name.upper()}: required but not set{hint}")
    return problems


def load_settings(*, require_runtime: bool = False, **overrides: Any) -> Settings:
    """Read and validate the settings; raise ConfigError listing every problem at once."""
    problems = _missing_runtime(overrides) if require_runtime else []
    try:
        settings = Settings(**overrides)
    except ValidationError as error:
        invalid = [_describe(item) for item in error.errors(include_input=False)]
        raise ConfigError(invalid + problems) from None
    if problems:
        raise ConfigError(problems)
    return settings
