"""What the loopback receiver knows: accepted CDRs and recordings, faults to inject, the contract.

Thread-safe: the HTTP handler threads and the test (or the /_test control endpoints) share it.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
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

Poison = Callable[[Mapping[str, Any]], bool]


def cdr_problem(cdr: Any) -> str | None:
    """Check one CDR object against api-contract.md; return the first problem, or None."""
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
    """An injected answer: `status` (None drops the connection) for `count` requests or a while."""

    status: int | None
    count: int | None = None
    until: float | None = None  # time.monotonic() deadline
    retry_after: str | None = None
    endpoint: str | None = None  # cdr, recording, health; None = every endpoint
    after: bool = False  # process the request first, then answer with the fault (lost answer)
    body: str = "injected fault"

    def active(self, now: float) -> bool:
        """Tell whether the fault still applies."""
        alive_count = self.count is None or self.count > 0
        alive_time = self.until is None or now < self.until
        return alive_count and alive_time


@dataclass
class BatchOutcome:
    """The answer to one CDR batch."""

    status: int
    payload: dict[str, Any]


@dataclass
class ReceiverState:
    """Everything the receiver recorded and the switches that change its answers."""

    api_key: str
    key_refused: bool = False
    delay_s: float = 0.0
    hold_s: float = 0.0  # after doing the work, wait this long before answering (a lost answer)
    faults: list[Fault] = field(default_factory=list)
    poisons: list[tuple[Poison, str]] = field(default_factory=list)
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
        """Return the first active fault for `endpoint`, using up one of its requests."""
        now = time.monotonic()
        with self.lock:
            self.faults = [fault for fault in self.faults if fault.active(now)]
            for fault in self.faults:
                if fault.endpoint in (None, endpoint):
                    if fault.count is not None:
                        fault.count -= 1
                    return fault
        return None

    def note(self, endpoint: str, status: int | str, headers: Iterable[tuple[str, str]]) -> None:
        """Count one answer and keep the request's headers for inspection."""
        with self.lock:
            self.answers[f"{endpoint} {status}"] += 1
            self.last_headers = {
                name: "***" if name.lower() == "authorization" else value for name, value in headers
            }

    def accept_batch(self, key: str, body_sha256: str, cdrs: list[dict[str, Any]]) -> BatchOutcome:
        """Apply Idempotency-Key semantics and poison rules, then record the batch."""
        with self.lock:
            previous = self.idempotency.get(key)
            if previous is not None and previous != body_sha256:
                message = "Idempotency-Key reused with a different body"
                return BatchOutcome(422, {"error": message})
            for index, cdr in enumerate(cdrs):
                for predicate, message in self.poisons:
                    if predicate(cdr):
                        return BatchOutcome(422, {"error": message, "index": index})
            replay = previous is not None
            self.replays += replay
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

    def reset(self) -> None:
        """Forget everything received and every fault, poison and switch."""
        with self.lock:
            self.key_refused = False
            self.delay_s = 0.0
            self.hold_s = 0.0
            self.faults.clear()
            self.poisons.clear()
            self.cdrs.clear()
            self.arrivals.clear()
            self.counts.clear()
            self.recordings.clear()
            self.recording_counts.clear()
            self.answers.clear()
            self.idempotency.clear()
            self.batches = self.replays = 0
            self.last_headers = {}


def field_poison(path: str, equals: str) -> Poison:
    """Build a poison predicate: the CDR's field (`dst`, or `raw.UserField`) equals `equals`."""
    keys = path.split(".")

    def predicate(cdr: Mapping[str, Any]) -> bool:
        value: Any = cdr
        for key in keys:
            if not isinstance(value, Mapping) or key not in value:
                return False
            value = value[key]
        return str(value) == equals

    return predicate
