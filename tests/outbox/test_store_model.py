"""The store against a plain in-memory model (hypothesis RuleBasedStateMachine).

Any sequence of append / take / mark / reschedule / defer / restart / resend / purge keeps every
row, allows only the legal transitions (pending → sent | filtered | failed, failed → pending), and
`stats()` equals the model. Rows are taken as both drainers take them: a due read that leaves out
the rows in flight, kept in memory; a restart forgets them and keeps every row's next_attempt_at.
The model mirrors the dedupe rules of Store.append_cdrs: a repeated AMI frame is ignored, the n-th
distinct frame with one identity gets `#n`, a CSV line brings its own `#n`, and an AMI frame
meeting a CSV row's key only lends it its fingerprint.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from connector.outbox.migrate import prepare_database
from connector.outbox.records import CdrRow, Kind, NewCdr, NewRecording, RecordingRow, State
from connector.outbox.store import Store
from connector.timeutil import to_iso

LEGAL = {
    (State.PENDING, State.SENT),
    (State.PENDING, State.FILTERED),
    (State.PENDING, State.FAILED),
    (State.FAILED, State.PENDING),
}
FAR_S = 3600.0  # a delay that cannot expire during a test; its negative is "due at once"
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # long past: appended rows are due at once

kinds = st.sampled_from(Kind)
# (identity, frame): frame None is a CSV line, which brings its own occurrence.
cdr_specs = st.tuples(st.integers(0, 2), st.none() | st.integers(0, 2), st.integers(1, 3))
recording_specs = st.tuples(st.integers(0, 3), st.sampled_from((100, 200)))


@dataclass
class ModelRow:
    """What the model knows of one stored row."""

    key: str
    identity: str | None
    fingerprint: str | None
    arrived_at: str
    state: State = State.PENDING
    attempts: int = 0
    due: bool = True


class Model:
    """The outbox as plain dictionaries."""

    def __init__(self) -> None:
        self.rows: dict[Kind, dict[int, ModelRow]] = {kind: {} for kind in Kind}
        self.last_id: dict[Kind, int] = dict.fromkeys(Kind, 0)
        self.unnumbered: dict[Kind, list[ModelRow]] = {kind: [] for kind in Kind}

    def everything(self, kind: Kind) -> list[ModelRow]:
        """Every row of a table, with those inserted but not numbered yet."""
        return [*self.rows[kind].values(), *self.unnumbered[kind]]

    def _insert(self, kind: Kind, row: ModelRow) -> int:
        self.unnumbered[kind].append(row)
        return 1

    def number(self, kind: Kind, ids: list[int]) -> None:
        """Give the rows just inserted the ids the database chose (AUTOINCREMENT may skip some)."""
        assert len(ids) == len(self.unnumbered[kind])
        assert ids == sorted(ids) and all(i > self.last_id[kind] for i in ids)  # never reused
        self.rows[kind].update(zip(ids, self.unnumbered[kind], strict=True))
        self.unnumbered[kind].clear()
        self.last_id[kind] = max(ids, default=self.last_id[kind])

    def append_cdr(self, new: NewCdr) -> int:
        """Mirror Store.append_cdrs (number_cdrs) for one row; return 1 if it is new."""
        table = self.everything(Kind.CDR)
        same = [row for row in table if row.identity == new.identity]
        if new.fingerprint is not None and any(row.fingerprint == new.fingerprint for row in same):
            return 0  # the same AMI frame again
        if new.occurrence is not None or new.fingerprint is None:
            occurrence = new.occurrence or 1
        else:
            occurrence = 1 + sum(row.fingerprint is not None for row in same)
            # A number still held by another frame (its predecessors were purged) is skipped.
            while any(row.key == f"{new.identity}#{occurrence}" and row.fingerprint for row in same):
                occurrence += 1
        key = f"{new.identity}#{occurrence}"
        existing = next((row for row in table if row.key == key), None)
        if existing is None:
            return self._insert(Kind.CDR, ModelRow(key, new.identity, new.fingerprint, new.received_at))
        if existing.fingerprint is None and new.fingerprint is not None:
            existing.fingerprint = new.fingerprint
        return 0

    def append_recording(self, new: NewRecording) -> int:
        """Mirror INSERT OR IGNORE on (path, size, mtime)."""
        key = f"{new.path}|{new.size}|{new.mtime}"
        if any(row.key == key for row in self.everything(Kind.RECORDING)):
            return 0
        return self._insert(Kind.RECORDING, ModelRow(key, None, None, new.detected_at))

    def pending(self, kind: Kind, ids: list[int]) -> list[ModelRow]:
        """The rows among `ids` that are pending."""
        table = self.rows[kind]
        return [table[i] for i in ids if i in table and table[i].state is State.PENDING]

    def due_ids(self, kind: Kind, in_flight: set[int]) -> list[int]:
        """Pending rows a due read returns, oldest first: due and not in flight."""
        table = self.rows[kind]
        return sorted(
            i for i, row in table.items() if row.state is State.PENDING and row.due and i not in in_flight
        )

    def snapshot(self) -> dict[Kind, dict[int, tuple[Any, ...]]]:
        """What the database must hold."""
        return {
            kind: {i: (row.key, row.fingerprint, row.state.value, row.attempts) for i, row in table.items()}
            for kind, table in self.rows.items()
        }


def read_database(db: sqlite3.Connection) -> dict[Kind, dict[int, tuple[Any, ...]]]:
    """Every row of both tables, as the model snapshot shows them."""
    cdrs = db.execute("SELECT id, dedupe_key, fingerprint, state, attempts FROM cdr")
    recordings = db.execute(
        "SELECT id, path || '|' || size || '|' || mtime, NULL, state, attempts FROM recording"
    )
    return {
        Kind.CDR: {row[0]: tuple(row[1:]) for row in cdrs},
        Kind.RECORDING: {row[0]: tuple(row[1:]) for row in recordings},
    }


class StoreMachine(RuleBasedStateMachine):
    """Drive a real Store and the model side by side."""

    template: Path
    machines = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.folder = self.template.parent / f"machine-{next(self.machines)}"
        self.folder.mkdir()
        shutil.copyfile(self.template, self.folder / "outbox.db")
        self.runner = asyncio.Runner()
        self.store = self.runner.run(Store.open(self.folder / "outbox.db"))
        self.in_flight: dict[Kind, set[int]] = {kind: set() for kind in Kind}  # the drainers' sets
        self.reader = sqlite3.connect(self.folder / "outbox.db")
        self.model = Model()
        self.clock = itertools.count(1)
        self.seen = self.model.snapshot()
        self.purged = False

    def teardown(self) -> None:
        self.reader.close()
        self.runner.run(self.store.close())
        self.runner.close()
        shutil.rmtree(self.folder)

    def _moment(self) -> str:
        return to_iso(EPOCH + timedelta(seconds=next(self.clock)))

    def _ids(self, data: st.DataObject, kind: Kind) -> list[int]:
        known = sorted(self.model.rows[kind])
        choices = [*known, max(known, default=0) + 1]  # and one id that does not exist
        return data.draw(st.lists(st.sampled_from(choices), max_size=4, unique=True))

    @rule(specs=st.lists(cdr_specs, min_size=1, max_size=6))
    def append_cdrs(self, specs: list[tuple[int, int | None, int]]) -> None:
        rows = [
            NewCdr(
                headers=(("UniqueID", f"u{identity}"),),
                received_at=self._moment(),
                identity=f"id{identity}",
                fingerprint=None if frame is None else f"frame{identity}.{frame}",
                uniqueid=f"u{identity}",
                linkedid=None,
                source="ami" if frame is not None else "csv",
                occurrence=occurrence if frame is None else None,
            )
            for identity, frame, occurrence in specs
        ]
        expected = sum(self.model.append_cdr(row) for row in rows)
        assert self.runner.run(self.store.append_cdrs(rows)) == expected
        self._number(Kind.CDR)

    @rule(specs=st.lists(recording_specs, min_size=1, max_size=4))
    def append_recordings(self, specs: list[tuple[int, int]]) -> None:
        rows = [NewRecording(f"/spool/r{path}.wav", size, 1.5, self._moment()) for path, size in specs]
        expected = sum(self.model.append_recording(row) for row in rows)
        assert self.runner.run(self.store.append_recordings(rows)) == expected
        self._number(Kind.RECORDING)

    def _number(self, kind: Kind) -> None:
        newest = self.model.last_id[kind]
        ids = [
            row[0]
            for row in self.reader.execute(f"SELECT id FROM {kind.value} WHERE id > ? ORDER BY id", (newest,))
        ]
        self.model.number(kind, ids)

    @rule(kind=kinds, limit=st.integers(1, 4))
    def take(self, kind: Kind, limit: int) -> None:
        in_flight = self.in_flight[kind]
        taken: Sequence[CdrRow | RecordingRow]
        if kind is Kind.CDR:
            taken = self.runner.run(self.store.due_cdrs(limit, in_flight))
        else:
            taken = self.runner.run(self.store.due_recordings(limit, in_flight))
        expected = self.model.due_ids(kind, in_flight)[:limit]
        assert [row.id for row in taken] == expected
        count, oldest = self.runner.run(self.store.due_summary(kind, limit, in_flight))
        arrived = [self.model.rows[kind][i].arrived_at for i in expected]
        assert (count, oldest) == (len(expected), min(arrived, default=None))
        for row in taken:
            model_row = self.model.rows[kind][row.id]
            assert (row.state, row.attempts) == (State.PENDING, model_row.attempts)
        in_flight.update(expected)  # no row is taken twice while in flight

    @rule(kind=kinds, data=st.data(), outcome=st.sampled_from(State))
    def settle(self, kind: Kind, data: st.DataObject, outcome: State) -> None:
        ids = self._ids(data, kind)
        targets = self.model.pending(kind, ids)
        if outcome is State.SENT:
            changed = self.runner.run(self.store.mark_sent(kind, ids))
        elif outcome is State.FILTERED:
            changed = self.runner.run(self.store.mark_filtered(kind, {i: "filtered by rule" for i in ids}))
        elif outcome is State.FAILED:
            changed = self.runner.run(self.store.mark_failed(kind, {i: "422 rejected" for i in ids}))
        else:
            changed = 0  # abandoned (refused key, shutdown deadline): the row stays as it is
        for row in targets if outcome is not State.PENDING else []:
            row.state = outcome
            row.attempts += outcome is State.FAILED
        assert changed == (len(targets) if outcome is not State.PENDING else 0)
        self.in_flight[kind].difference_update(ids)  # settled or abandoned: no longer in flight

    @rule(kind=kinds, data=st.data(), due=st.booleans())
    def reschedule(self, kind: Kind, data: st.DataObject, due: bool) -> None:
        ids = self._ids(data, kind)
        targets = self.model.pending(kind, ids)
        changed = self.runner.run(self.store.reschedule(kind, ids, -FAR_S if due else FAR_S, "503"))
        for row in targets:
            row.attempts += 1
            row.due = due
        assert changed == len(targets)

    @rule(kind=kinds, data=st.data(), due=st.booleans())
    def defer(self, kind: Kind, data: st.DataObject, due: bool) -> None:
        ids = self._ids(data, kind)
        targets = self.model.pending(kind, ids)
        changed = self.runner.run(self.store.defer(kind, ids, -FAR_S if due else FAR_S))
        for row in targets:
            row.due = due
        assert changed == len(targets)

    @rule()
    def restart(self) -> None:
        # As `connector run` starts again: a new store, nothing in flight, every row's due time kept.
        self.runner.run(self.store.close())
        self.store = self.runner.run(Store.open(self.folder / "outbox.db"))
        for in_flight in self.in_flight.values():
            in_flight.clear()

    @rule(
        only=st.none() | kinds,
        data=st.data(),
        by_id=st.booleans(),
        since=st.sampled_from((None, "2000-01-01T00:00:00.000000Z", "2999-01-01T00:00:00.000000Z")),
    )
    def resend(self, only: Kind | None, data: st.DataObject, by_id: bool, since: str | None) -> None:
        chosen = [only] if only else list(Kind)
        ids = self._ids(data, chosen[0]) if by_id else []
        moved = self.runner.run(self.store.resend(kinds=chosen, ids=ids, since=since))
        expected = 0
        if since is None or since < "2500":
            for kind in chosen:
                for i, row in self.model.rows[kind].items():
                    if row.state is State.FAILED and (not ids or i in ids):
                        row.state, row.due = State.PENDING, True
                        expected += 1
        assert moved == expected

    @rule(everything=st.booleans())
    def purge(self, everything: bool) -> None:
        # A negative age puts the cut-off in the future: every settled row is old enough.
        removed = self.runner.run(self.store.purge(-FAR_S if everything else 30 * 86400.0))
        expected = 0
        if everything:
            for table in self.model.rows.values():
                settled = [i for i, row in table.items() if row.state in (State.SENT, State.FILTERED)]
                for i in settled:
                    del table[i]
                expected += len(settled)
        assert removed == expected
        self.purged = True

    @invariant()
    def database_equals_model_and_moves_are_legal(self) -> None:
        stored = read_database(self.reader)
        assert stored == self.model.snapshot()
        for kind, rows in stored.items():
            for i, before in self.seen[kind].items():
                old = State(before[2])
                if i not in rows:
                    assert self.purged and old in (State.SENT, State.FILTERED), f"{kind} {i} vanished"
                elif rows[i][0] == before[0] and rows[i][2] != before[2]:
                    assert (old, State(rows[i][2])) in LEGAL, f"{kind} {i}: {old} → {rows[i][2]}"
        self.seen, self.purged = stored, False

    @invariant()
    def stats_equal_model(self) -> None:
        stats = self.runner.run(self.store.stats())
        failed_ids: set[tuple[Kind, int]] = set()
        for kind, table in self.model.rows.items():
            counts = {state: 0 for state in State}
            for row in table.values():
                counts[row.state] += 1
            pending = self.model.pending(kind, sorted(table))
            assert dict(stats.tables[kind].counts) == counts
            assert stats.tables[kind].oldest_pending_at == (pending[0].arrived_at if pending else None)
            failed_ids |= {(kind, i) for i, row in table.items() if row.state is State.FAILED}
        assert len(stats.recent_failures) == min(5, len(failed_ids))
        assert {(failure.kind, failure.id) for failure in stats.recent_failures} <= failed_ids


def test_store_behaves_like_the_model(tmp_path: Path) -> None:
    StoreMachine.template = tmp_path / "template.db"
    prepare_database(StoreMachine.template)
    run_state_machine_as_test(
        StoreMachine,
        settings=settings(
            max_examples=60,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
