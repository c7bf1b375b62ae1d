"""`connector backfill --file PATH`: import a Master.csv once (history, or a rotated file).

Only DATA_DIR is needed (like `status`), and it may run next to `connector run`: rows already in
the outbox are recognised by their dedupe key, so importing the same file twice adds nothing. It
does not move the follower's saved position.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from connector.backfill.follower import BackfillStore
from connector.backfill.guard import TimeGuard
from connector.backfill.lines import (
    LineParser,
    Malformed,
    OccurrenceWindow,
    ParsedLines,
    check_layout,
    cutoff_text,
)
from connector.backfill.tail import BATCH_BYTES, complete_lines
from connector.backfill.time_match import CLI_NAMES, describe_shift
from connector.cdr.times import resolve_zone
from connector.config import load_store_settings
from connector.errors import UserError
from connector.metrics import BACKFILL_MALFORMED, CDRS_RECOVERED
from connector.outbox.store import Store
from connector.progress import Progress
from connector.timeutil import utc_now

MALFORMED_SHOWN = 20
PLAIN_PROGRESS_STEP = 10  # percent between two progress lines when stderr is not a terminal
BAR_WIDTH = 30
BAR_REFRESH_S = 0.1


@dataclass
class ImportSummary:
    """What a one-off import did."""

    path: str
    read: int = 0
    known: int = 0
    recovered: int = 0
    skipped: int = 0
    malformed: int = 0
    shifted: int = 0
    first_malformed: list[Malformed] = field(default_factory=list)
    elapsed_s: float = 0.0
    shift_note: str = ""  # with shifted lines: how far off their times are, and the fix

    def add(self, parsed: ParsedLines, lines: int) -> None:
        """Count a parsed batch."""
        self.read += lines
        self.skipped += parsed.skipped
        self.malformed += len(parsed.malformed)
        self.shifted += parsed.shifted
        room = MALFORMED_SHOWN - len(self.first_malformed)
        self.first_malformed.extend(parsed.malformed[: max(room, 0)])

    def committed(self, rows: int, new: int) -> None:
        """Count a committed batch: `new` of its `rows` were not in the outbox."""
        self.recovered += new
        self.known += rows - new

    def render(self, cutoff: str | None) -> str:
        """The summary printed at the end."""
        rate = self.read / self.elapsed_s if self.elapsed_s > 0 else 0.0
        skipped = f"before {cutoff} or blank" if cutoff else "blank"
        lines = [
            f"{self.path}: {self.read:,} lines read in {self.elapsed_s:.1f} s ({rate:,.0f} lines/s)",
            f"  already known  {self.known:>12,}",
            f"  recovered      {self.recovered:>12,}",
            f"  malformed      {self.malformed:>12,}",
            f"  skipped        {self.skipped:>12,}  ({skipped})",
        ]
        if self.shifted:
            note = "not stored: already known with other times"
            lines.append(f"  time-shifted   {self.shifted:>12,}  ({note})")
            lines.append(f"times do not match AMI: {self.shift_note}")
        if self.first_malformed:
            lines.append("malformed lines (skipped):")
            lines += [f"  line {item.line}: {item.reason}" for item in self.first_malformed]
            if self.malformed > len(self.first_malformed):
                lines.append(f"  ... and {self.malformed - len(self.first_malformed):,} more")
            if self.malformed == self.read:
                lines.append("no line matched the layout: check --columns")
        return "\n".join(lines)


def import_progress(total_bytes: int, display: Progress) -> Callable[[int, int], None]:
    """Return import_file's `progress`: a bar on a terminal, a line at each 10 % step otherwise."""
    total_bytes = max(total_bytes, 1)
    started = time.monotonic()
    last_step = 0

    def update(done_bytes: int, lines: int) -> None:
        nonlocal last_step
        percent = min(100, done_bytes * 100 // total_bytes)
        rate = lines / max(time.monotonic() - started, 1e-6)
        if display.tty:
            filled = BAR_WIDTH * percent // 100
            bar = "#" * filled + "-" * (BAR_WIDTH - filled)
            text = f"[{bar}] {percent:3d}%  {lines:,} lines  {rate:,.0f} lines/s"
            display.show(text, force=percent >= 100)  # the end is always shown
        elif percent >= last_step + PLAIN_PROGRESS_STEP or (percent == 100 > last_step):
            last_step = percent - percent % PLAIN_PROGRESS_STEP
            display.show(f"backfill: {percent}% ({lines:,} lines, {rate:,.0f} lines/s)", force=True)

    return update


class FileLines:
    """Read a file's complete lines from its start up to `limit`, parsed batch by batch."""

    def __init__(
        self,
        handle: BinaryIO,
        parser: LineParser,
        limit: int,
        batch_bytes: int,
        guard: TimeGuard | None = None,
    ) -> None:
        self.handle, self.parser, self.limit, self.batch_bytes = handle, parser, limit, batch_bytes
        self.guard = guard
        self.offset = self.line = 0
        self.window = OccurrenceWindow()

    def next_batch(self) -> tuple[ParsedLines, int] | None:
        """Parse the next batch; None at the end."""
        lines, end = complete_lines(self.handle, self.offset, self.limit, self.batch_bytes)
        if not lines:
            if self.offset >= self.limit:
                return None
            # Bytes after the last line end: a line cut short (or still being written).
            parsed = ParsedLines(malformed=[Malformed(self.line + 1, "incomplete last line (no line end)")])
            self.offset = self.limit
            return parsed, 1
        parsed = self.parser.parse(lines, self.line + 1, self.window, utc_now())
        if self.guard is not None:
            self.guard.screen(parsed)
        self.offset, self.line = end, self.line + len(lines)
        return parsed, len(lines)


async def import_file(
    store: BackfillStore,
    path: Path,
    parser: LineParser,
    *,
    batch_bytes: int = BATCH_BYTES,
    progress: Callable[[int, int], None] | None = None,
    guard: TimeGuard | None = None,
) -> ImportSummary:
    """Store every CDR of the file that the outbox does not have; return the counts.

    With `guard`, lines whose AMI twin is stored with shifted times are left out and counted.
    """
    started = time.monotonic()
    handle = await asyncio.to_thread(path.open, "rb")
    try:
        limit = handle.seek(0, 2)
        reader = FileLines(handle, parser, limit, batch_bytes, guard)
        summary = ImportSummary(path=str(path))
        commit: asyncio.Task[int] | None = None
        rows = 0
        while True:
            # The next batch is parsed while the previous one commits.
            batch = await asyncio.to_thread(reader.next_batch)
            if commit is not None:
                summary.committed(rows, await commit)
                commit = None
            if batch is None:
                break
            parsed, lines = batch
            summary.add(parsed, lines)
            BACKFILL_MALFORMED.inc(len(parsed.malformed))
            if parsed.rows:
                rows = len(parsed.rows)
                commit = asyncio.create_task(store.append_cdrs(parsed.rows))
            if progress is not None:
                progress(reader.offset, summary.read)
    finally:
        if commit is not None:
            commit.cancel()
        handle.close()
    CDRS_RECOVERED.labels(source="csv").inc(summary.recovered)
    summary.elapsed_s = time.monotonic() - started
    main = guard.main_shift() if guard is not None else None
    if main is not None:
        shift, fix = main
        summary.shift_note = f"the outbox has these CDRs from AMI {describe_shift(shift)}; {fix}"
    return summary


async def _run_import(args: argparse.Namespace, parser: LineParser) -> ImportSummary:
    settings = load_store_settings()
    store = await Store.open(settings.outbox_path)
    guard = TimeGuard(store.path, gmt=args.gmt, zone=resolve_zone(args.tz), names=CLI_NAMES)
    try:
        display = Progress(sys.stderr, redraw_s=BAR_REFRESH_S)
        progress = import_progress(args.file.stat().st_size, display)
        summary = await import_file(store, args.file, parser, progress=progress, guard=guard)
        display.end()
        return summary
    finally:
        guard.close()
        await store.close()


def _parser_from_args(args: argparse.Namespace) -> LineParser:
    try:
        layout = check_layout(args.columns)
    except ValueError as error:
        raise UserError(f"--columns: {error}") from None
    try:
        zone = resolve_zone(args.tz)
        cutoff = cutoff_text(args.from_, zone)
    except ValueError as error:
        raise UserError(f"--from: {error}") from None
    except KeyError:  # ZoneInfoNotFoundError
        raise UserError(f"--tz: unknown time zone {args.tz!r}; use e.g. Europe/Paris") from None
    if args.from_.strip().lower() == "end":
        raise UserError("--from: use start or a date (end would import nothing)")
    return LineParser(layout, cutoff, gmt_zone=zone if args.gmt else None)


def cmd_backfill(args: argparse.Namespace) -> int:
    """Run `connector backfill`."""
    parser = _parser_from_args(args)
    if not args.file.is_file():
        raise UserError(f"--file: {args.file} is not a readable file")
    try:
        summary = asyncio.run(_run_import(args, parser))
    except OSError as error:
        raise UserError(f"--file: cannot read {args.file}: {error.strerror or error}") from None
    print(summary.render(parser.cutoff))
    return 0


def add_backfill_parser(subparsers: Any) -> None:
    """Register `connector backfill` on the command line's sub-parsers."""
    backfill = subparsers.add_parser(
        "backfill",
        help="import CDRs from a Master.csv once (calls missed while the connector was down)",
        description="Import the CDRs of an Asterisk CSV file (cdr_csv or cdr_custom) that the outbox "
        "does not have yet; they are then delivered like any other. Safe to repeat.",
    )
    backfill.add_argument("--file", required=True, type=Path, metavar="PATH", help="the CSV file")
    backfill.add_argument(
        "--from",
        dest="from_",
        default="start",
        metavar="DATE",
        help="only CDRs that started at or after this ISO date/time (as written in the file, or with "
        "an offset/Z); default: start (the whole file)",
    )
    backfill.add_argument(
        "--columns",
        default="csv",
        metavar="csv|csv-newcdrcolumns|LIST",
        help="the column layout: csv (cdr_csv with loguniqueid and loguserfield), csv-newcdrcolumns "
        "(the same with newcdrcolumns=yes) or the comma list of CDR fields of your cdr_custom template "
        "(default: csv)",
    )
    backfill.add_argument(
        "--gmt",
        action="store_true",
        help="the file's times are UTC (cdr.conf [csv] usegmtime = yes; CDR_BACKFILL_CSV_GMT=true for "
        "`connector run`): they are converted to --tz's zone, as the AMI events carry them",
    )
    backfill.add_argument(
        "--tz",
        default="",
        metavar="ZONE",
        help="the PBX's time zone, for --gmt and for a --from date with an offset (default: this machine's)",
    )
    backfill.set_defaults(handler=cmd_backfill)
