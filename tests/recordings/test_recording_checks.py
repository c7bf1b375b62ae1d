"""The RECORDING_* rules, one by one, on names, sizes, ages and real files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from connector.config import load_settings
from connector.recordings.checks import (
    Decision,
    Outcome,
    RecordingRules,
    decide,
    duration_problem,
    name_problem,
    path_problem,
    stat_problem,
    uniqueid_from_name,
    uniqueids_in_name,
)
from tests.paths import RECORDING_FIXTURES
from tests.recordings.media import MPEG1_128K_44100, asterisk_wav_header, mp3_frame, write_wav

RULES = RecordingRules()
NOW = 1_800_000_000.0


@pytest.mark.usefixtures("clean_env")
def test_rules_from_settings() -> None:
    settings = load_settings(
        recording_file_extensions="WAV, mp3",
        recording_min_file_size="2048",
        recording_include_patterns="in-,out-",
        recording_exclude_patterns="test",
        recording_min_duration="2.5",
        recording_max_age_hours="1.5",
    )
    assert RecordingRules.from_settings(settings) == RecordingRules(
        extensions=(".wav", ".mp3"),
        min_size=2048,
        include_patterns=("in-", "out-"),
        exclude_patterns=("test",),
        min_duration_s=2.5,
        max_age_s=5400.0,
    )


@pytest.mark.usefixtures("clean_env")
def test_default_settings_give_default_rules() -> None:
    assert RecordingRules.from_settings(load_settings()) == RULES


@pytest.mark.parametrize("name", ["a.wav", "A.WAV", "x.Mp3", "1795735443.50.gsm", "@a b'c\".wav"])
def test_wanted_extensions_pass_whatever_the_case(name: str) -> None:
    assert name_problem(name, RULES) is None


@pytest.mark.parametrize("name", ["a.txt", "a.wav.part", "1795735443.50", "wav", ".wav.tmp"])
def test_other_extensions_are_refused(name: str) -> None:
    problem = name_problem(name, RULES)
    assert problem is not None and "RECORDING_FILE_EXTENSIONS" in problem


def test_include_patterns_are_substrings_of_the_name() -> None:
    rules = RecordingRules(include_patterns=("in-", "out-"))
    assert name_problem("out-200-100.wav", rules) is None
    assert name_problem("q-in-1.wav", rules) is None
    assert "RECORDING_INCLUDE_PATTERNS" in (name_problem("lab-1.wav", rules) or "")
    assert name_problem("IN-1.wav", rules) is not None  # case-sensitive


def test_exclude_patterns_win_and_are_literal() -> None:
    rules = RecordingRules(include_patterns=("out-",), exclude_patterns=("test", "*"))
    assert name_problem("out-test.wav", rules) == "name contains 'test' (RECORDING_EXCLUDE_PATTERNS)"
    assert name_problem("out-ok.wav", rules) is None  # `*` is a literal star, not a glob
    assert name_problem("out-*.wav", rules) is not None


def test_size_is_inclusive() -> None:
    assert stat_problem(1024, NOW, RULES, NOW) is None
    assert stat_problem(1023, NOW, RULES, NOW) == ("size 1023 bytes is below RECORDING_MIN_FILE_SIZE (1024)")


def test_age_limit_and_a_clock_ahead_of_ours() -> None:
    assert stat_problem(5000, NOW - 24 * 3600, RULES, NOW) is None
    problem = stat_problem(5000, NOW - 30 * 3600, RULES, NOW)
    assert problem == "modified 30.0 h ago, beyond RECORDING_MAX_AGE_HOURS (24)"
    assert stat_problem(5000, NOW + 600, RULES, NOW) is None


def test_unknown_duration_is_kept() -> None:
    rules = RecordingRules(min_duration_s=5)
    assert duration_problem(None, rules) is None
    assert duration_problem(5.0, rules) is None
    assert duration_problem(4.99, rules) == "duration 4.99 s is below RECORDING_MIN_DURATION (5)"


def test_non_utf8_paths_are_refused() -> None:
    assert path_problem("/spool/ünïcødé 日本.wav") is None
    assert path_problem(os.fsdecode(b"/spool/\xff\xfe.wav")) is not None


def judged(path: Path, rules: RecordingRules = RULES) -> Decision:
    status = path.stat()
    return decide(path, status.st_size, status.st_mtime, rules, time.time())


def test_the_real_recording_is_accepted_with_its_duration() -> None:
    path = RECORDING_FIXTURES / "lab-1795735443.50.wav"
    assert judged(path, RecordingRules(min_duration_s=3)) == Decision(Outcome.ACCEPT, "", 3.96)
    decision = judged(path, RecordingRules(min_duration_s=4))
    assert decision.outcome is Outcome.REJECT and "RECORDING_MIN_DURATION" in decision.reason


def test_small_and_old_files_are_refused(tmp_path: Path) -> None:
    small = tmp_path / "small.wav"
    small.write_bytes(asterisk_wav_header(100) + bytes(100))
    assert "RECORDING_MIN_FILE_SIZE" in judged(small).reason
    old = write_wav(tmp_path / "old.wav", 1.0)
    os.utime(old, (time.time() - 25 * 3600,) * 2)
    assert "RECORDING_MAX_AGE_HOURS" in judged(old).reason


def test_a_wav_still_being_written_is_unfinished(tmp_path: Path) -> None:
    live = tmp_path / "live.wav"
    live.write_bytes(asterisk_wav_header() + bytes(32768))
    assert judged(live) == Decision(Outcome.UNFINISHED, "the WAV header sizes are not filled in yet", 2.048)


def test_mp3_of_unknown_duration_is_kept_and_short_one_refused(tmp_path: Path) -> None:
    rules = RecordingRules(min_duration_s=1)
    garbage = tmp_path / "noise.mp3"
    garbage.write_bytes(bytes(4096))
    assert judged(garbage, rules) == Decision(Outcome.ACCEPT, "", None)
    short = tmp_path / "short.mp3"
    short.write_bytes(mp3_frame(MPEG1_128K_44100, 417) * 10)  # 0.26 s
    assert judged(short, rules).outcome is Outcome.REJECT
    assert judged(short).outcome is Outcome.ACCEPT  # no minimum: frames are not even walked


def test_unreadable_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "locked.wav", 1.0)
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as root: permissions do not apply")
        assert "cannot read the file" in judged(path).reason
    finally:
        path.chmod(0o644)


@pytest.mark.parametrize(
    ("name", "uniqueid"),
    [
        ("lab-1795735443.50.wav", "1795735443.50"),
        ("1732650000.42-in.wav", "1732650000.42"),
        ("out-200-100-20261127-1795735443.50.wav", "1795735443.50"),
        ("out-200-100-20261127-153000-1795735443.7.WAV", "1795735443.7"),
        ("pbx1-1795735443.50.wav", "1795735443.50"),  # systemname prefix left out
        ("1795735440.1-1795735443.50.wav", "1795735443.50"),  # last one wins
        ("q-20261127.wav", None),
        ("PJSIP-200-00000001-in.wav", None),
        ("12345678.9.wav", None),  # eight digits: a date, not an epoch
    ],
)
def test_uniqueid_from_file_name(name: str, uniqueid: str | None) -> None:
    assert uniqueid_from_name(name) == uniqueid


def test_every_uniqueid_in_order() -> None:
    assert uniqueids_in_name("1795735440.1-1795735443.50.wav") == ("1795735440.1", "1795735443.50")
