"""The `connector` command line: run, status, resend, purge, migrate, salvage, check and the rest.

Every user mistake (configuration, arguments, an outbox that cannot be used) ends as one line on
stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from connector import __version__
from connector.backfill.command import add_backfill_parser
from connector.config import load_settings, load_store_settings
from connector.demo.command import add_demo_parser
from connector.errors import ConfigError, OutboxError, StartupError, UserError
from connector.logs import configure_logging
from connector.outbox.migrate import known_revisions, prepare_database
from connector.outbox.records import Kind, State
from connector.outbox.rows import OutboxStats
from connector.outbox.salvage import SalvageCounts, salvage_file
from connector.outbox.store import Store
from connector.progress import Progress
from connector.timeutil import age_seconds, parse_iso, to_iso

EXIT_USAGE = 2


def _format_age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def stats_as_dict(stats: OutboxStats, path: str) -> dict[str, Any]:
    """The JSON form of `connector status`."""
    return {
        "outbox": path,
        "tables": {
            kind.value: {
                **{state.value: table.counts[state] for state in State},
                "oldest_pending_at": table.oldest_pending_at,
                "oldest_pending_age_s": round(age_seconds(table.oldest_pending_at), 3)
                if table.oldest_pending_at
                else None,
            }
            for kind, table in stats.tables.items()
        },
        "recent_failures": [
            {
                "kind": failure.kind.value,
                "id": failure.id,
                "attempts": failure.attempts,
                "failed_at": failure.failed_at,
                "last_error": failure.last_error,
            }
            for failure in stats.recent_failures
        ],
    }


def render_status(stats: OutboxStats, path: str) -> str:
    """The text form of `connector status`."""
    lines = [f"outbox: {path}", ""]
    header = f"{'table':<10} {'pending':>8} {'sent':>8} {'filtered':>9} {'failed':>7}  oldest pending"
    lines.append(header)
    for kind, table in stats.tables.items():
        oldest = _format_age(age_seconds(table.oldest_pending_at)) if table.oldest_pending_at else "-"
        counts = table.counts
        lines.append(
            f"{kind.value:<10} {counts[State.PENDING]:>8} {counts[State.SENT]:>8}"
            f" {counts[State.FILTERED]:>9} {counts[State.FAILED]:>7}  {oldest}"
        )
    if stats.recent_failures:
        lines += ["", "recent failures (connector resend moves them back to pending):"]
        for failure in stats.recent_failures:
            error = (failure.last_error or "").replace("\n", " ")[:160]
            lines.append(
                f"  {failure.kind.value} #{failure.id}  {failure.failed_at}"
                f"  attempts={failure.attempts}  {error}"
            )
    return "\n".join(lines)


async def _with_store(path: Any, work: Callable[[Store], Any]) -> Any:
    store = await Store.open(path)
    try:
        return await work(store)
    finally:
        await store.close()


def cmd_status(args: argparse.Namespace) -> int:
    settings = load_store_settings()
    stats = asyncio.run(_with_store(settings.outbox_path, lambda store: store.stats()))
    if args.json:
        print(json.dumps(stats_as_dict(stats, str(settings.outbox_path)), indent=2))
    else:
        print(render_status(stats, str(settings.outbox_path)))
    return 0


def _since(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return to_iso(parse_iso(value))
    except ValueError:
        raise UserError(
            f"--since: {value!r} is not an ISO time; use e.g. 2026-11-27 or 2026-11-27T13:45:00Z"
        ) from None


def cmd_resend(args: argparse.Namespace) -> int:
    if args.id and not args.kind:
        raise UserError("--id: row ids are per table; add --kind cdr or --kind recording")
    settings = load_store_settings()
    kinds = [Kind(args.kind)] if args.kind else list(Kind)
    since = _since(args.since)
    moved = asyncio.run(
        _with_store(
            settings.outbox_path,
            lambda store: store.resend(kinds=kinds, ids=args.id or (), since=since),
        )
    )
    print(f"moved {moved} failed row(s) back to pending")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    settings = load_store_settings()
    days = args.older_than if args.older_than is not None else settings.outbox_retention_days
    if days < 0:
        raise UserError("--older-than: must be 0 or more days")
    removed = asyncio.run(
        _with_store(settings.outbox_path, lambda store: store.purge(older_than_s=days * 86400))
    )
    print(f"purged {removed} sent/filtered row(s) older than {days:g} day(s)")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = load_store_settings()
    prepare_database(settings.outbox_path)
    _, head = known_revisions()
    print(f"outbox {settings.outbox_path} is at schema {head} (newest)")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from connector.app import run_connector

    settings = load_settings(require_runtime=True)
    configure_logging(settings.log_level.value, settings.log_format.value)
    return asyncio.run(run_connector(settings))


def cmd_check(args: argparse.Namespace) -> int:
    from connector.check import report, run_checks

    settings = load_settings()
    return report(asyncio.run(run_checks(settings)), as_json=args.json)


def _salvage_source(file: Path, outbox: Path) -> None:
    """Refuse, in one line, a FILE that salvage cannot read from."""
    if not file.exists():
        raise UserError(
            f"{file} does not exist: give the path of a damaged or quarantined outbox, "
            f"e.g. {outbox}.corrupt-<time>"
        )
    if not file.is_file():
        raise UserError(f"{file} is not a file: give the path of a damaged or quarantined outbox")
    if outbox.exists() and file.samefile(outbox):
        raise UserError(
            f"{file} is the live outbox of DATA_DIR {outbox.parent}: salvage imports another file into "
            f"it, e.g. {outbox}.corrupt-<time>"
        )


async def _salvage(file: Path, outbox: Path, display: Progress) -> SalvageCounts:
    store = await Store.open(outbox)
    try:
        return await salvage_file(file, store, lambda counts: display.show(counts.progress()))
    finally:
        display.end()
        await store.close()


def cmd_salvage(args: argparse.Namespace) -> int:
    settings = load_store_settings()
    _salvage_source(args.file, settings.outbox_path)
    counts = asyncio.run(_salvage(args.file, settings.outbox_path, Progress(sys.stderr)))
    hint = counts.lost_cdrs.hint()
    if hint:
        print(hint)
    print(counts.line())
    return 0


def _positive_id(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise argparse.ArgumentTypeError("ids are positive integers")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="connector",
        description="Ship Asterisk CDRs and call recordings to the SIPSTACK API, durably.",
        epilog="Configuration comes from environment variables (and ./.env); see README.md.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="listen to AMI and deliver to the API (the service)")
    run.set_defaults(handler=cmd_run)

    check = commands.add_parser("check", help="diagnose AMI, Asterisk CDR set-up, the API and DATA_DIR")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(handler=cmd_check)

    status = commands.add_parser("status", help="show the outbox backlog and recent failures")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=cmd_status)

    resend = commands.add_parser("resend", help="move failed rows back to pending")
    resend.add_argument("--kind", choices=[kind.value for kind in Kind], help="only this table")
    resend.add_argument("--id", type=_positive_id, nargs="+", metavar="N", help="only these row ids")
    resend.add_argument("--since", metavar="ISO-TIME", help="only rows that failed at or after this")
    resend.set_defaults(handler=cmd_resend)

    purge = commands.add_parser("purge", help="delete sent and filtered rows past the retention")
    purge.add_argument(
        "--older-than",
        type=float,
        metavar="DAYS",
        help="age in days (default: OUTBOX_RETENTION_DAYS)",
    )
    purge.set_defaults(handler=cmd_purge)

    migrate = commands.add_parser("migrate", help="create or upgrade the outbox schema")
    migrate.set_defaults(handler=cmd_migrate)

    salvage = commands.add_parser(
        "salvage",
        help="import every row a damaged or quarantined outbox still holds, each in its state",
        description="Read FILE (a damaged or quarantined outbox, never changed) row by row, around "
        "pages that cannot be read, and import its rows into the outbox of DATA_DIR by dedupe key: "
        "pending rows are then delivered, sent rows stay sent. Safe to repeat, and beside `run`.",
    )
    salvage.add_argument("file", type=Path, metavar="FILE", help="e.g. DATA_DIR/outbox.db.corrupt-<time>")
    salvage.set_defaults(handler=cmd_salvage)

    add_backfill_parser(commands)
    add_demo_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `connector` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(handler(args))
    except ConfigError as error:
        for problem in error.problems:
            print(f"configuration error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except (OutboxError, StartupError, UserError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
