"""Drive a receiver running in another process: start it, flip its switches, read what it got."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from tests.doubles.receiver import DEFAULT_API_KEY
from tests.paths import REPO

READY_PREFIX = "READY "


class ReceiverControl:
    """The /_test endpoints of a receiver at `base_url` (e.g. http://127.0.0.1:8080/v1)."""

    def __init__(self, base_url: str, timeout_s: float = 10.0) -> None:
        root = base_url.rstrip("/").removesuffix("/v1")
        self._http = httpx.Client(base_url=root + "/_test", timeout=timeout_s)

    def close(self) -> None:
        """Close the HTTP connection."""
        self._http.close()

    def _post(self, action: str, **args: Any) -> None:
        self._http.post(f"/{action}", json=args).raise_for_status()

    def summary(self) -> dict[str, Any]:
        """Counts: cdrs, deliveries, duplicates, batches, replays, recordings, answers."""
        response = self._http.get("/summary")
        response.raise_for_status()
        return dict(response.json())

    def received(self) -> dict[str, Any]:
        """The summary plus cdr_list, counts (per event_id) and recording_list."""
        response = self._http.get("/received")
        response.raise_for_status()
        return dict(response.json())

    def fail(
        self,
        status: int | None,
        *,
        count: int | None = None,
        duration_s: float | None = None,
        retry_after: str | None = None,
        endpoint: str | None = None,
        after: bool = False,
    ) -> None:
        """Inject a fault (see Receiver.fail)."""
        self._post(
            "fault",
            status=status,
            count=count,
            duration_s=duration_s,
            retry_after=retry_after,
            endpoint=endpoint,
            after=after,
        )

    def clear_faults(self) -> None:
        """Remove every injected fault."""
        self._post("clear_faults")

    def refuse_key(self, refused: bool = True) -> None:
        """Answer 401 to every API request while `refused`."""
        self._post("key", refused=refused)

    def set_delay(self, seconds: float) -> None:
        """Wait this long before answering each API request."""
        self._post("delay", seconds=seconds)

    def poison(self, path: str, equals: str, message: str = "poison CDR") -> None:
        """Reject with 422 any batch holding a CDR whose `path` equals `equals`."""
        self._post("poison", field=path, equals=equals, message=message)

    def clear_poison(self) -> None:
        """Accept poison CDRs again."""
        self._post("poison", clear=True)

    def reset(self) -> None:
        """Forget everything received and every switch."""
        self._post("reset")


class ReceiverProcess:
    """`python -m tests.doubles.receiver` as a child process, run in the repository; a context manager.

    Stopping it sends SIGTERM and waits; its last stdout line is the final summary (JSON).
    """

    def __init__(
        self, *, port: int = 0, data_dir: Path | None = None, api_key: str = DEFAULT_API_KEY
    ) -> None:
        command = [sys.executable, "-m", "tests.doubles.receiver", "--port", str(port)]
        command += ["--api-key", api_key]
        if data_dir is not None:
            command += ["--data-dir", str(data_dir)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(READY_PREFIX):
            self.process.kill()
            self.process.wait()
            self.process.stdout.close()
            raise RuntimeError(f"receiver did not start: {line!r}")
        self.base_url = line.removeprefix(READY_PREFIX).strip()
        self.control = ReceiverControl(self.base_url)

    def stop(self, timeout_s: float = 10.0) -> str:
        """Terminate it and return the rest of its output (the final summary)."""
        self.control.close()
        if self.process.poll() is None:
            self.process.terminate()
        output, _ = self.process.communicate(timeout=timeout_s)
        return output

    def __enter__(self) -> ReceiverProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
