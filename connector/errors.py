"""The connector's exception tree.

ConnectorError           every error the connector raises on purpose
├── SendError            what the API client raises; the drainer maps each to one row transition
│   ├── RetryLater       network error, timeout, 408, 429, 5xx → row stays pending
│   ├── Rejected         400, 413, 422 → the offending row(s) become failed
│   └── AuthRefused      401, 403 → no row changes state; the drainer pauses
├── FileProblem          a recording cannot be read as detected → its row fails with the message
│   └── FileChanged      its size or mtime differ from what was detected
├── OutboxError          the outbox cannot be opened or used (one line for the user, exit 2)
│   ├── OutboxLocked     another `connector run` owns this DATA_DIR
│   └── OutboxCorrupt    the file is damaged or not a database: `run` moves it aside, the rest refuse
├── AmiError             an AMI session could not be set up or used
│   ├── LoginRefused     Asterisk refused AMI_USERNAME/AMI_PASSWORD
│   └── HandshakeFailed  the port answered, but no AMI came of it: TLS handshake failed, no banner
├── SourceError          the CDR database's table cannot serve gap recovery (lacks a column)
├── ConfigError          the settings are invalid; one line per variable (exit 2)
├── UserError            a command-line mistake the user can fix (exit 2)
└── StartupError         the service cannot start, e.g. the monitoring port is taken (exit 2)

The detail of a SendError is the API client's one-line text (e.g. `HTTP 422 Unprocessable Entity:
<the API's answer>`); callers log and store it as it is.
"""

from __future__ import annotations

from pathlib import Path


class ConnectorError(Exception):
    """Base of every error the connector raises on purpose."""


class SendError(ConnectorError):
    """A delivery to the API did not succeed."""


class RetryLater(SendError):
    """Transient failure: try again after `retry_after_s` (None: use our own backoff)."""

    def __init__(self, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_s = retry_after_s


class Rejected(SendError):
    """The API refused the content; `detail` is its answer, kept as the row's last_error."""

    def __init__(self, detail: str, status: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class AuthRefused(SendError):
    """The API refused the key (401/403)."""

    def __init__(self, detail: str, status: int) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class FileProblem(ConnectorError):
    """A recording file cannot be uploaded as it was detected; the message is the row's last_error."""


class FileChanged(FileProblem):
    """The file is not the one detected: changed since it was detected, or during the upload."""


class OutboxError(ConnectorError):
    """The outbox database cannot be used; the message is one line naming the file and the fix."""


class OutboxLocked(OutboxError):
    """Another `connector run` already owns the DATA_DIR."""


class OutboxCorrupt(OutboxError):
    """The outbox file is damaged or not a database (`problem` says how); its bytes are untouched."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(
            f"{path} {problem}: `connector run` moves it aside (to {path.name}.corrupt-<time>) and starts "
            "a fresh outbox; `connector salvage <that file>` recovers its rows"
        )
        self.path = path
        self.problem = problem


class AmiError(ConnectorError):
    """An AMI session could not be set up or used."""


class LoginRefused(AmiError):
    """Asterisk refused AMI_USERNAME/AMI_PASSWORD (`Message: Authentication failed`)."""


class HandshakeFailed(AmiError):
    """The TCP connection was made but no AMI came of it; the message is one line with the fix.

    `during_tls` tells a failed TLS handshake from a missing banner.
    """

    def __init__(self, message: str, *, during_tls: bool) -> None:
        super().__init__(message)
        self.during_tls = during_tls


class SourceError(ConnectorError):
    """The CDR database cannot be used as a gap-recovery source; one line naming the fix."""


class ConfigError(ConnectorError):
    """The configuration is invalid; `problems` holds one user-facing line per variable."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class UserError(ConnectorError):
    """A mistake the user can fix; printed as one line."""


class StartupError(ConnectorError):
    """The service cannot start (e.g. the monitoring port is taken); the message names the fix."""
