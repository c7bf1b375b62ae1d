"""One `connector run` per DATA_DIR: an advisory lock file held for the life of the process."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO

from connector.errors import OutboxError, OutboxLocked

LOCK_NAME = "connector.lock"


class DataDirLock:
    """An exclusive flock on DATA_DIR/connector.lock; the kernel releases it if the process dies."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock or raise OutboxLocked naming the holder."""
        try:
            handle = self.path.open("a+")
        except OSError as error:
            raise OutboxError(f"cannot create {self.path}: {error.strerror}") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise OutboxLocked(
                f"another connector (pid {holder}) is running with DATA_DIR {self.path.parent}: "
                "stop it first, or give this one a DATA_DIR of its own"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Drop the lock."""
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
