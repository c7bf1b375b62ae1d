"""`connector demo` on the command line: its arguments, and the handler that runs it.

Light on purpose: `connector --help` and `connector status` import this module, and must not load
the simulated PBX, the local API or the pipeline; `cmd_demo` imports them when the demo runs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from connector.demo.options import DEFAULT_DURATION_S, DEFAULT_RATE, DemoOptions
from connector.errors import StartupError
from connector.logs import configure_logging


def _positive(value: str) -> float:
    number = float(value)
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {value}")
    return number


def _not_negative(value: str) -> float:
    number = float(value)
    if not number >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return number


def cmd_demo(args: argparse.Namespace) -> int:
    """Run `connector demo`."""
    from connector.demo.run import run_demo  # here: the simulators load only when the demo runs

    configure_logging(args.log_level)
    options = DemoOptions(args.duration, args.rate, args.outage, args.data_dir)
    return asyncio.run(run_demo(options))


def add_demo_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `connector demo` with the command line."""
    demo = subparsers.add_parser(
        "demo",
        help="see it work without an Asterisk: a simulated PBX, a local API, the real pipeline",
        description="Run the real pipeline between a simulated PBX (AMI server, call mix, recordings) and"
        " a local API, all on 127.0.0.1, then check that nothing was lost. Reads no environment"
        " variables and no .env file.",
    )
    demo.add_argument(
        "--duration", type=_positive, default=DEFAULT_DURATION_S, metavar="SECONDS",
        help=f"how long to place calls (default {DEFAULT_DURATION_S:g})",
    )  # fmt: skip
    demo.add_argument(
        "--rate", type=_positive, default=DEFAULT_RATE, metavar="CALLS_PER_SECOND",
        help=f"calls placed per second (default {DEFAULT_RATE:g})",
    )  # fmt: skip
    demo.add_argument(
        "--outage", type=_not_negative, default=0.0, metavar="SECONDS",
        help="the API answers 503 for this long in the middle of the run (default 0: no outage)",
    )  # fmt: skip
    demo.add_argument(
        "--data-dir", type=Path, default=None, metavar="DIR",
        help="keep the outbox here (default: a temporary folder, deleted at the end)",
    )  # fmt: skip
    demo.add_argument(
        "--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), default="ERROR",
        help="the connector's log lines on stderr (default ERROR: only the progress line)",
    )  # fmt: skip
    demo.set_defaults(handler=cmd_demo)


def main(argv: list[str] | None = None) -> int:
    """Run `connector demo` on its own (python -m connector.demo ARGS)."""
    parser = argparse.ArgumentParser(prog="connector")
    add_demo_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo", *(sys.argv[1:] if argv is None else argv)])
    try:
        return cmd_demo(args)
    except StartupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
