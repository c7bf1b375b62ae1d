"""A small Dockerfile reader: enough of the reference syntax to check our own Dockerfile's instructions."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Instruction:
    """One instruction: its keyword (upper case), its raw arguments and the line it starts on."""

    keyword: str
    args: str
    line: int

    @property
    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for the shell form."""
        return exec_form(self.args)

    def flags_and_rest(self) -> tuple[dict[str, str], str]:
        """Split leading `--name=value` flags (HEALTHCHECK, COPY) from the rest of the arguments."""
        flags: dict[str, str] = {}
        rest = self.args
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.lstrip()
        return flags, rest


def exec_form(args: str) -> list[str] | None:
    """Parse `["a", "b"]` as Docker does (a JSON array of strings); None when it is not one."""
    if not args.startswith("["):
        return None
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    return None


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(text: str) -> float:
    """Seconds in a Go duration as HEALTHCHECK takes it (`5s`, `1m30s`, `500ms`); ValueError otherwise."""
    parts = _DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continuation lines (trailing backslash); drop comment and blank lines."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments may sit between continuation lines, as in Docker
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(part for part in pending if part)))
        pending = []
    if pending:
        raise ValueError(f"line {start}: continuation never ends")
    return lines


def parse(path: Path) -> list[Instruction]:
    """Read a Dockerfile into its instructions, in order."""
    instructions = []
    for line, text in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, args = text.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), line))
    return instructions
