"""The connector's exception tree.

ConnectorError
├── SendError            what the API client raises; the drainer maps each to one row transition
│   ├── RetryLater       network error, timeout, 408, 429, 5xx → row stays pending
│   ├── Rejected         400, 413, 422 → the offending row(s) become failed
│   └── AuthRefused      401, 403 → no row changes state; the drainer pauses
└── OutboxError          the outbox cannot be opened or used (one line for the user, exit 2)
    └── OutboxLocked     another `connector run` owns this DATA_DIR
"""

from __future__ import annotations


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


class OutboxError(ConnectorError):
    """The outbox database cannot be used; the message is one line naming the file and the fix."""


class OutboxLocked(OutboxError):
    """Another `connector run` already owns the DATA_DIR."""


class FileProblem(ConnectorError):
    """A recording file cannot be uploaded as it was detected; the message is the row's last_error."""


class FileChanged(FileProblem):
    """The file's size or mtime is no longer what it was detected with."""


class StartupError(ConnectorError):
    """The service cannot start (e.g. the monitoring port is taken); the message names the fix."""
