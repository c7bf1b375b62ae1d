"""What the loopback receiver knows: accepted CDRs and recordings, the outage it fakes, the contract.

Thread-safe: the HTTP handler threads and the demo (or a test) share it.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

STRING_FIELDS = frozenset(
    {
        "event_id", "uniqueid", "call_id", "linkedid", "src", "src_number", "src_name", "clid",
        "dst", "dst_number", "dcontext", "channel", "dstchannel", "lastapp", "lastdata",
        "disposition", "amaflags", "accountcode", "userfield", "direction",
    }
)  # fmt: skip
TIME_FIELDS = frozenset({"calldate", "started_at", "answered_at", "ended_at"})
INT_FIELDS = frozenset({"duration", "billsec", "sequence"})
DIRECTIONS = frozenset({"inbound", "outbound", "internal"})
_UTC_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")


def cdr_problem(cdr: Any) -> str | None:
    """Check one CDR object against README's "What each CDR becomes"; return the first problem, or None."""
    if not isinstance(cdr, dict):
        return "is not an object"
    if not isinstance(cdr.get("event_id"), str) or not cdr["event_id"]:
        return "event_id must be a non-empty string"
    for key, value in cdr.items():
        problem = _field_problem(key, value)
        if problem:
            return f"{key} {problem}"
    return None


def _field_problem(key: str, value: Any) -> str | None:
    if value is None:
        return "is null (omit unknown values)"
    if key in STRING_FIELDS:
        if not isinstance(value, str):
            return "must be a string"
        if key == "direction" and value not in DIRECTIONS:
            return f"must be one of {sorted(DIRECTIONS)}"
        return None
    if key in TIME_FIELDS:
        is_time = isinstance(value, str) and _UTC_TIME.fullmatch(value) is not None
        return None if is_time else "must be UTC ISO-8601 ending in Z"
    if key in INT_FIELDS:
        is_count = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if is_count else "must be a non-negative integer"
    if key == "raw":
        is_raw = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return None if is_raw else "must be an object of strings"
    return "is not a field of the contract"


@dataclass
class Fault:
    """An injected answer to every request: `status` (with Retry-After, `body`) until a deadline."""

    status: int
    until: float | None = None  # time.monotonic() deadline; None: as long as the receiver runs
    retry_after: str | None = None
    body: str = "injected fault"

    def active(self, now: float) -> bool:
        """Tell whether the fault still applies."""
        return self.until is None or now < self.until


@dataclass
class BatchOutcome:
    """The answer to one CDR batch."""

    status: int
    payload: dict[str, Any]


@dataclass
class ReceiverState:
    """Everything the receiver recorded, and the faults that change its answers."""

    api_key: str
    faults: list[Fault] = field(default_factory=list)
    cdrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    arrivals: dict[str, float] = field(default_factory=dict)  # event_id -> first arrival (epoch s)
    counts: Counter[str] = field(default_factory=Counter)
    recordings: dict[str, dict[str, Any]] = field(default_factory=dict)
    recording_counts: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)
    batches: int = 0
    replays: int = 0
    last_headers: dict[str, str] = field(default_factory=dict)
    idempotency: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take_fault(self, endpoint: str) -> Fault | None:
        """Return the fault that answers this request to `endpoint` (any: a fault takes the whole API)."""
        now = time.monotonic()
        with self.lock:
            self.faults = [fault for fault in self.faults if fault.active(now)]
            return self.faults[0] if self.faults else None

    def note(self, endpoint: str, status: int | str, headers: Iterable[tuple[str, str]]) -> None:
        """Count one answer and keep the request's headers for inspection."""
        with self.lock:
            self.answers[f"{endpoint} {status}"] += 1
            self.last_headers = {
                name: "***" if name.lower() == "authorization" else value for name, value in headers
            }

    def accept_batch(self, key: str, body_sha256: str, cdrs: list[dict[str, Any]]) -> BatchOutcome:
        """Apply Idempotency-Key semantics, then record the batch."""
        with self.lock:
            return self._refusal(key, body_sha256, cdrs) or self._record(key, body_sha256, cdrs)

    def _refusal(self, key: str, body_sha256: str, cdrs: list[dict[str, Any]]) -> BatchOutcome | None:
        """The 422 a batch gets (called under the lock), or None to accept it."""
        previous = self.idempotency.get(key)
        if previous is not None and previous != body_sha256:
            return BatchOutcome(422, {"error": "Idempotency-Key reused with a different body"})
        return None

    def _record(self, key: str, body_sha256: str, cdrs: list[dict[str, Any]]) -> BatchOutcome:
        self.replays += key in self.idempotency
        self.batches += 1
        self.idempotency[key] = body_sha256
        new = 0
        for cdr in cdrs:
            event = cdr["event_id"]
            self.counts[event] += 1
            if event not in self.cdrs:
                self.cdrs[event] = cdr
                self.arrivals[event] = time.time()
                new += 1
        return BatchOutcome(200, {"accepted": new, "duplicates": len(cdrs) - new})

    def add_recording(self, recording_id: str, record: dict[str, Any]) -> bool:
        """Record an accepted upload; return False if this recording_id was already received."""
        with self.lock:
            self.recording_counts[recording_id] += 1
            if recording_id in self.recordings:
                return False
            self.recordings[recording_id] = record
            return True

    def summary(self) -> dict[str, Any]:
        """Counts only: cheap to ask for even after 100,000 CDRs."""
        with self.lock:
            return {
                "cdrs": len(self.cdrs),
                "deliveries": sum(self.counts.values()),
                "duplicates": sum(self.counts.values()) - len(self.cdrs),
                "batches": self.batches,
                "replays": self.replays,
                "recordings": len(self.recordings),
                "recording_duplicates": sum(self.recording_counts.values()) - len(self.recordings),
                "answers": dict(self.answers),
                "last_headers": dict(self.last_headers),
            }

    def snapshot(self) -> dict[str, Any]:
        """Everything received: CDRs (first copy per event_id, arrival order), counts, recordings."""
        result = self.summary()
        with self.lock:
            result["cdr_list"] = list(self.cdrs.values())
            result["counts"] = dict(self.counts)
            result["arrivals"] = dict(self.arrivals)
            result["recording_list"] = list(self.recordings.values())
        return result
