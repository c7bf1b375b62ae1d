"""What `connector demo` found: CDRs and recordings followed from the PBX to the API, and the summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from connector.cdr.identity import event_id
from connector.demo.options import DemoOptions
from connector.demo.pbx import PbxTally
from connector.outbox.records import CdrRow, Kind, State
from connector.outbox.rows import OutboxStats
from connector.outbox.store import Store


@dataclass(frozen=True)
class Counts:
    """One outbox table's rows added since the demo started, and its whole backlog."""

    stored: int
    sent: int
    filtered: int
    failed: int
    pending: int


def counts_since(stats: OutboxStats, baseline: OutboxStats, kind: Kind) -> Counts:
    """Rows added since `baseline` (an existing --data-dir may hold older ones); pending: all."""
    now, before = stats.tables[kind].counts, baseline.tables[kind].counts

    def added(state: State) -> int:
        return now[state] - before[state]

    return Counts(
        stored=sum(now.values()) - sum(before.values()),
        sent=added(State.SENT),
        filtered=added(State.FILTERED),
        failed=added(State.FAILED),
        pending=now[State.PENDING],
    )


@dataclass
class CdrAudit:
    """Every generated CDR followed into the outbox and to the API."""

    generated: int = 0
    stored: int = 0
    states: Counter[State] = field(default_factory=Counter)
    filtered: Counter[str] = field(default_factory=Counter)
    received_once: int = 0
    not_received: int = 0  # marked sent, yet the API never saw its event_id
    duplicated: int = 0

    @property
    def missing(self) -> int:
        """Generated but not in the outbox."""
        return self.generated - self.stored


async def audit_cdrs(store: Store, tally: PbxTally, api_counts: Mapping[str, int]) -> CdrAudit:
    """Find each generated CDR in the outbox by (UniqueID, Sequence), then its event_id at the API."""
    rows: dict[tuple[str, str], CdrRow] = {}
    for uniqueid in dict.fromkeys(uniqueid for uniqueid, _ in tally.cdrs):
        for row in await store.cdrs_by_uniqueid(uniqueid):
            rows[(row.uniqueid, dict(row.headers).get("Sequence", ""))] = row
    audit = CdrAudit(generated=len(tally.cdrs))
    for key in tally.cdrs:
        found = rows.get(key)
        if found is None:
            continue
        row = found
        audit.stored += 1
        audit.states[row.state] += 1
        if row.state is State.FILTERED:
            audit.filtered[row.filter_reason or "unknown"] += 1
        elif row.state is State.SENT:
            seen = api_counts.get(event_id(row.dedupe_key), 0)
            audit.received_once += seen == 1
            audit.duplicated += seen > 1
            audit.not_received += seen == 0
    return audit


@dataclass
class RecordingAudit:
    """Every recording written followed to the API."""

    active: bool
    written: int
    counts: Counts
    received: int = 0  # with the very bytes written
    linked: int = 0  # uploaded with the UniqueID of their call
    altered: int = 0  # received with other bytes
    duplicated: int = 0

    @property
    def missing(self) -> int:
        """Written, not received (intact)."""
        return self.written - self.received - self.altered


def audit_recordings(
    tally: PbxTally, counts: Counts, received: list[dict[str, Any]], active: bool
) -> RecordingAudit:
    """Match the API's uploads to the files written, by name and SHA-256."""
    audit = RecordingAudit(active=active, written=len(tally.recordings), counts=counts)
    seen: Counter[str] = Counter()
    for record in received:
        name = str(record.get("file_name", ""))
        if name not in tally.recordings:
            continue
        seen[name] += 1
        if seen[name] > 1:
            continue
        if record.get("received_sha256") == tally.recordings[name]:
            audit.received += 1
        else:
            audit.altered += 1
        audit.linked += bool(record.get("uniqueid")) and str(record["uniqueid"]) in name
    audit.duplicated = sum(1 for count in seen.values() if count > 1)
    return audit


@dataclass
class Summary:
    """Everything the end-of-run report shows."""

    options: DemoOptions
    tally: PbxTally
    cdrs: CdrAudit
    recordings: RecordingAudit
    drained: bool
    elapsed_s: float
    outbox: str
    exit_code: int = 0  # what the connector's serve() returned
    failure: str | None = None  # why serve() did not return
    outage_s: float = 0.0  # how long the API was down (0: no outage, or interrupted before it)
    peak_backlog: int = 0
    refused: int = 0  # requests the API answered 503 during the outage
    api: dict[str, Any] = field(default_factory=dict)


def _counted(counter: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(counter.items(), key=lambda kv: -kv[1]))


def problems(summary: Summary) -> list[str]:
    """What went wrong, one line each; empty when nothing was lost or doubled."""
    cdrs, tally = summary.cdrs, summary.tally
    found = []
    if summary.exit_code:
        why = summary.failure or "a part of it failed (see the log)"
        found.append(f"the connector stopped with exit code {summary.exit_code}: {why}")
    if cdrs.missing:
        unheard = f" ({tally.unheard} sent while no AMI client was connected)" if tally.unheard else ""
        found.append(f"{cdrs.missing} generated CDR(s) are not in the outbox{unheard}")
    if cdrs.states[State.PENDING]:
        found.append(f"{cdrs.states[State.PENDING]} CDR(s) still pending: the backlog did not drain in time")
    if cdrs.states[State.FAILED]:
        found.append(f"{cdrs.states[State.FAILED]} CDR(s) rejected by the API (state failed)")
    if cdrs.not_received:
        found.append(f"{cdrs.not_received} CDR(s) marked sent that the API never received")
    if cdrs.duplicated:
        found.append(f"{cdrs.duplicated} CDR(s) reached the API more than once")
    if not summary.drained and not found:
        found.append("the backlog did not drain in time")
    recordings = summary.recordings
    if recordings.active:
        if recordings.missing:
            found.append(f"{recordings.missing} recording(s) never reached the API")
        if recordings.altered:
            found.append(f"{recordings.altered} recording(s) reached the API with other bytes")
        if recordings.duplicated:
            found.append(f"{recordings.duplicated} recording(s) reached the API more than once")
    return found


def _recording_line(recordings: RecordingAudit) -> str:
    if not recordings.active:
        return f"{recordings.written} written; not uploaded: the recording watcher is off"
    counts = recordings.counts
    return (
        f"{recordings.written} written, {counts.stored} queued, {counts.sent} uploaded,"
        f" {recordings.received} received intact ({recordings.linked} linked to their call's UniqueID)"
    )


def render_summary(summary: Summary) -> list[str]:
    """The report printed at the end of the demo."""
    cdrs, tally, api = summary.cdrs, summary.tally, summary.api
    lines = [
        f"Summary ({summary.elapsed_s:.1f} s)",
        f"  calls placed          {tally.placed:>6}  ({_counted(tally.calls)})",
        f"  CDRs generated        {cdrs.generated:>6}  (hangup handler h {tally.h_cdrs},"
        f" queue attempts {tally.queue_attempts}; {_counted(tally.dispositions)})",
        f"  stored in the outbox  {cdrs.stored:>6}",
        f"  sent to the API       {cdrs.states[State.SENT]:>6}",
        f"  filtered              {cdrs.states[State.FILTERED]:>6}  ({_counted(cdrs.filtered) or 'none'})",
        f"  failed                {cdrs.states[State.FAILED]:>6}",
        f"  still pending         {cdrs.states[State.PENDING]:>6}",
        f"  received by the API   {api.get('cdrs', 0):>6}  unique event_ids,"
        f" {api.get('duplicates', 0)} duplicate(s), in {api.get('batches', 0)} batch(es)",
    ]
    if summary.outage_s:
        lines.append(
            f"  API outage            {summary.outage_s:>5g}s  {summary.refused} request(s)"
            f" answered 503; the backlog peaked at {summary.peak_backlog} CDR(s)"
        )
    lines += [
        f"  recordings            {_recording_line(summary.recordings)}",
        f"  outbox                {summary.outbox}",
    ]
    found = problems(summary)
    if not found:
        verdict = (
            f"Verdict: nothing lost. All {cdrs.generated} CDRs generated are in the outbox, and all"
            f" {cdrs.received_once} not filtered reached the API exactly once (by event_id)"
        )
        if summary.recordings.active:
            verdict += f"; all {summary.recordings.received} recordings arrived intact"
        return [*lines, "", verdict + "."]
    return [
        *lines,
        "",
        "Verdict: something was lost or went wrong:",
        *(f"  - {problem}" for problem in found),
    ]
