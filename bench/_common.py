"""What more than one benchmark needs: a real `connector run`'s environment, and /proc figures.

Not a benchmark itself (CI runs only bench/*_bench.py).
"""

from __future__ import annotations

import os
from pathlib import Path

# The AMI user the benchmarks' fake AMI servers know.
AMI_USER, AMI_SECRET = "bench", "bench-secret"
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def status_mb(pid: int | str, field: str) -> float:
    """One memory line of /proc/<pid>/status (VmRSS, VmHWM, ...) in MB; pid may be "self"."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise LookupError(f"/proc/{pid}/status has no {field} line")


def cpu_s(pid: int, thread: int | None = None) -> float:
    """CPU time (user + system) a live process has used so far, all threads or only `thread` (a tid).

    The main thread's tid is the pid: cpu_s(pid, pid) is the event loop thread of an asyncio program.
    """
    stat = Path(f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat")
    # The command name (field 2) may hold spaces: count the fields after its closing parenthesis.
    fields = stat.read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def flood_chunks(count: int, size: int = 1000) -> list[bytes]:
    """The frames of a Cdr flood (synthetic_cdr 0 .. count-1), `size` frames per write.

    Built before a benchmark's clock starts, so that it measures the reader, not the frame builder.
    """
    from tests.doubles.ami_server import synthetic_cdrs  # not at the top: ingest_bench's child skips it

    return [b"".join(synthetic_cdrs(min(size, count - i), i)) for i in range(0, count, size)]


def connector_env(
    data_dir: Path, ami_port: int, api_base_url: str, api_key: str, **settings: str
) -> dict[str, str]:
    """The environment of a `connector run` against a fake AMI server on loopback and a receiver.

    The caller's AMI_*, API_* and CDR_* variables are left out, so that only `settings` (e.g.
    CDR_BATCH_SIZE="500") and the defaults apply; the monitoring endpoints are off unless asked for.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AMI_", "API_", "CDR_"))}
    env.update(
        DATA_DIR=str(data_dir), AMI_HOST="127.0.0.1", AMI_PORT=str(ami_port), AMI_USERNAME=AMI_USER,
        AMI_PASSWORD=AMI_SECRET, API_KEY=api_key, API_BASE_URL=api_base_url,
        MONITORING_ENABLED="false", ASTERISK_TZ="UTC",
    )  # fmt: skip
    env.update(settings)
    return env
