"""Which files are recordings worth uploading: the RECORDING_* rules as plain functions.

The watcher decides *when* to look (after the file stopped changing); these functions decide
*whether* the file qualifies, and say why not in words a user can act on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from connector.recordings.audio import AudioInfo, probe

if TYPE_CHECKING:
    from connector.config import Settings

# An Asterisk UniqueID is `<epoch seconds>.<sequence>` (e.g. 1795735443.50); with `systemname` set
# in asterisk.conf it gets a `<systemname>-` prefix, which this pattern leaves out. Nine or more
# digits before the dot keeps dates such as 20261127 (eight digits) from matching.
UNIQUEID_PATTERN = re.compile(r"(?<!\d)\d{9,}\.\d+")


@dataclass(frozen=True)
class RecordingRules:
    """The RECORDING_* acceptance rules, in the units the checks use."""

    extensions: tuple[str, ...] = (".wav", ".mp3", ".gsm")
    min_size: int = 1024
    include_patterns: tuple[str, ...] = ()
    exclude_patterns: tuple[str, ...] = ()
    min_duration_s: float = 0.0
    max_age_s: float = 24 * 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RecordingRules:
        """Build the rules from RECORDING_FILE_EXTENSIONS, …_MIN_FILE_SIZE, patterns, durations."""
        return cls(
            extensions=tuple(ext.lower() for ext in settings.recording_file_extensions),
            min_size=settings.recording_min_file_size,
            include_patterns=settings.recording_include_patterns,
            exclude_patterns=settings.recording_exclude_patterns,
            min_duration_s=settings.recording_min_duration,
            max_age_s=settings.recording_max_age_hours * 3600.0,
        )


class Outcome(Enum):
    """What to do with a file that has stopped changing."""

    ACCEPT = "accept"
    """A finished recording that passes every rule: store it."""
    REJECT = "reject"
    """It fails a rule; `reason` says which. Not looked at again unless it changes."""
    UNFINISHED = "unfinished"
    """Its writer has not closed it yet (WAV sizes still placeholders): look again later."""


@dataclass(frozen=True)
class Decision:
    """The verdict on one file."""

    outcome: Outcome
    reason: str = ""
    duration_s: float | None = None


def name_problem(name: str, rules: RecordingRules) -> str | None:
    """Why a file name disqualifies the file (extension, include/exclude patterns), or None."""
    extension = Path(name).suffix.lower()
    if extension not in rules.extensions:
        return f"extension {extension or '(none)'!r} is not in RECORDING_FILE_EXTENSIONS"
    # Plain, case-sensitive substrings of the file name (not the folder): `*` or `?` are literal.
    if rules.include_patterns and not any(p in name for p in rules.include_patterns):
        return "name contains none of RECORDING_INCLUDE_PATTERNS"
    excluded = next((p for p in rules.exclude_patterns if p in name), None)
    if excluded is not None:
        return f"name contains {excluded!r} (RECORDING_EXCLUDE_PATTERNS)"
    return None


def path_problem(path: str) -> str | None:
    """Why a path cannot be stored as text (bytes that are not UTF-8), or None."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "the path is not valid UTF-8 and cannot be stored or sent"
    return None


def stat_problem(size: int, mtime: float, rules: RecordingRules, now: float) -> str | None:
    """Why the size or the age disqualifies the file, or None (`now` in epoch seconds)."""
    if size < rules.min_size:
        return f"size {size} bytes is below RECORDING_MIN_FILE_SIZE ({rules.min_size})"
    age_s = now - mtime  # negative for a clock ahead of ours: recent enough
    if age_s > rules.max_age_s:
        hours = rules.max_age_s / 3600
        return f"modified {age_s / 3600:.1f} h ago, beyond RECORDING_MAX_AGE_HOURS ({hours:g})"
    return None


def duration_problem(duration_s: float | None, rules: RecordingRules) -> str | None:
    """Why the duration disqualifies the file, or None; an unknown duration never does."""
    if duration_s is None or duration_s >= rules.min_duration_s:
        return None
    return f"duration {duration_s:.2f} s is below RECORDING_MIN_DURATION ({rules.min_duration_s:g})"


def decide(path: Path, size: int, mtime: float, rules: RecordingRules, now: float) -> Decision:
    """Judge a stable file: name, size, age, then what its header or frames say."""
    problem = (
        name_problem(path.name, rules) or path_problem(str(path)) or stat_problem(size, mtime, rules, now)
    )
    if problem:
        return Decision(Outcome.REJECT, problem)
    try:
        # MP3 durations need a walk over every frame: only pay for it when a minimum is set.
        info = probe(path, size, want_duration=rules.min_duration_s > 0)
    except FileNotFoundError:
        raise  # gone, not bad: the caller forgets it
    except OSError as error:
        return Decision(Outcome.REJECT, f"cannot read the file: {error.strerror or error}")
    return judge_audio(info, rules)


def judge_audio(info: AudioInfo, rules: RecordingRules) -> Decision:
    """Turn what the file says about itself into a decision."""
    if not info.finished:
        return Decision(Outcome.UNFINISHED, "the WAV header sizes are not filled in yet", info.duration_s)
    problem = duration_problem(info.duration_s, rules)
    if problem:
        return Decision(Outcome.REJECT, problem, info.duration_s)
    return Decision(Outcome.ACCEPT, "", info.duration_s)


def uniqueids_in_name(name: str) -> tuple[str, ...]:
    """Every Asterisk UniqueID-looking token in a file name, in order."""
    return tuple(UNIQUEID_PATTERN.findall(name))


def uniqueid_from_name(name: str) -> str | None:
    """The Asterisk UniqueID in a recording's file name: the last one when several appear."""
    # Usual layouts end with ${UNIQUEID} (FreePBX: dir-to-from-date-time-uniqueid), so when a
    # name carries two (e.g. ${LINKEDID}-${UNIQUEID}) the last is the recording's own channel.
    found = uniqueids_in_name(name)
    return found[-1] if found else None
