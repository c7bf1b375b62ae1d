"""Keep Master.csv lines out of the outbox when their AMI twin is stored with shifted times.

With a wrong CDR_BACKFILL_CSV_GMT (cdr.conf `[csv] usegmtime`) or ASTERISK_TZ no CSV line gets the
identity of its AMI event, so every line would be stored as a new CDR and delivered a second
time. Before a batch is stored, `TimeGuard.screen` finds the lines whose identity is stored
nowhere while AMI CDRs of their UniqueID are, and drops those that time_shift says are one of
those CDRs with its times shifted. It counts them, and `warn` logs one WARNING with the counts
and the fix: at the first such line, then at most every WARNING_INTERVAL_S while more come.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, tzinfo
from pathlib import Path

from connector.backfill.lines import ParsedLines
from connector.backfill.time_match import (
    ENV_NAMES,
    FixNames,
    advice,
    describe_shift,
    parse_time,
    time_shift,
)
from connector.backfill.twins import AmiCdr, AmiTwins
from connector.cdr.identity import first_wins
from connector.outbox.records import NewCdr

log = logging.getLogger(__name__)

WARNING_INTERVAL_S = 600.0


class TimeGuard:
    """Screen CSV rows against the outbox's AMI CDRs (blocking: call it from the reading thread)."""

    def __init__(
        self,
        outbox_path: Path,
        *,
        gmt: bool,
        zone: tzinfo,
        names: FixNames = ENV_NAMES,
        interval_s: float = WARNING_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gmt, self.zone, self.names = gmt, zone, names
        self.interval_s = interval_s
        self._twins = AmiTwins(outbox_path)
        self._clock = clock
        self.shifted = 0  # lines dropped since the start
        self.shifts: Counter[timedelta] = Counter()
        self._sample: dict[timedelta, datetime] = {}
        self._warned_at: float | None = None
        self._unreported = 0

    def screen(self, parsed: ParsedLines) -> None:
        """Drop from parsed.rows those whose AMI twin is stored with shifted times; count them."""
        rows = parsed.rows
        unknown = self._twins.unknown(rows)
        if not unknown:
            return
        ami = self._twins.ami_cdrs(sorted({rows[i].uniqueid for i in unknown if rows[i].uniqueid}))
        if not ami:
            return
        dropped = {i for i in unknown if (twins := ami.get(rows[i].uniqueid)) and self._shift(rows[i], twins)}
        if dropped:
            parsed.rows = [row for i, row in enumerate(rows) if i not in dropped]
            parsed.shifted += len(dropped)

    def _shift(self, row: NewCdr, twins: Sequence[AmiCdr]) -> timedelta | None:
        """The shift if the row is one of these AMI CDRs with its times shifted, else None."""
        fields = first_wins(row.headers)
        matches = [(shift, twin) for twin in twins if (shift := time_shift(fields, twin.fields, self.zone))]
        # Without a Sequence to pair them, identical lines (ForkCDR twins) are the n-th of their
        # identity: only as many of them as there are shifted AMI twins are those twins.
        if not matches or (not fields.get("Sequence") and (row.occurrence or 1) > len(matches)):
            return None
        shift, twin = matches[0]
        self.shifted += 1
        self._unreported += 1
        self.shifts[shift] += 1
        self._sample.setdefault(shift, parse_time(twin.fields.get("StartTime", "")) or datetime(1970, 1, 1))
        return shift

    def warn(self, name: object, *, final: bool = False) -> None:
        """Log the lines dropped since the last warning, if any: once, then at most every interval_s.

        `final`: the end of a one-off import, logged whatever the interval.
        """
        if not self._unreported:
            return
        now = self._clock()
        if not final and self._warned_at is not None and now - self._warned_at < self.interval_s:
            return
        self._warned_at = now
        log.warning("%s", self.message(name))
        self._unreported = 0

    def main_shift(self) -> tuple[timedelta, str] | None:
        """The most common shift of the lines dropped so far (csv - ami) and its fix; None if none."""
        if not self.shifts:
            return None
        shift, _ = self.shifts.most_common(1)[0]
        return shift, advice(shift, gmt=self.gmt, zone=self.zone, at=self._sample[shift], names=self.names)

    def message(self, name: object) -> str:
        """What the warning says: the counts, the shift and the fix."""
        main = self.main_shift()
        if main is None:
            return f"{name}: no line was left out"
        shift, fix = main
        return (
            f"{name}: {self._unreported} line(s) not stored ({self.shifted} since the start, "
            f"{self.shifts[shift]} of them {describe_shift(shift)} than AMI): their CDRs are already "
            f"in the outbox from AMI with the same fields but the times, so storing them would send "
            f"each CDR twice. Fix: {fix}"
        )

    def close(self) -> None:
        """Close the outbox connection."""
        self._twins.close()
