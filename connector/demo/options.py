"""What `connector demo` is asked to do (light: the command line builds it before anything runs)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DEFAULT_DURATION_S = 20.0
DEFAULT_RATE = 5.0


@dataclass(frozen=True)
class DemoOptions:
    """What `connector demo` was asked to do."""

    duration_s: float = DEFAULT_DURATION_S
    rate: float = DEFAULT_RATE
    outage_s: float = 0.0
    data_dir: Path | None = None

    @property
    def outage_at_s(self) -> float:
        """When the outage starts, in seconds after the first call: centred in the run."""
        return max(0.0, (self.duration_s - self.outage_s) / 2)
