"""`connector demo` and its PBX simulator: the call mix on the wire, and whole runs as a real subprocess."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import wave
from collections import Counter, defaultdict
from pathlib import Path

from connector.demo.ami_server import FRAME_END, AmiUser, FakeAmiServer, encode_frame
from connector.demo.options import DemoOptions
from connector.demo.pbx import PbxSimulator, PbxTally
from connector.demo.report import (
    CdrAudit,
    Counts,
    RecordingAudit,
    Summary,
    problems,
    render_summary,
)
from connector.outbox.records import State

LOCAL_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}")
CDR_MANAGER_ORDER = [
    "Event", "Privilege", "AccountCode", "Source", "Destination", "DestinationContext", "CallerID",
    "Channel", "DestinationChannel", "LastApplication", "LastData", "StartTime", "AnswerTime",
    "EndTime", "Duration", "BillableSeconds", "Disposition", "AMAFlags", "UniqueID", "UserField",
    "LinkedID", "Sequence",
]  # fmt: skip


def parse_frame(frame: bytes) -> list[tuple[str, str]]:
    """Split one AMI frame into its headers, in order, values kept as sent."""
    headers = []
    for line in frame.decode().split("\r\n"):
        if line:
            key, _, value = line.partition(": ")
            headers.append((key, value))
    return headers


async def read_cdr_frames(reader: asyncio.StreamReader, count: int) -> list[list[tuple[str, str]]]:
    """Read frames from an AMI connection until `count` Cdr events came."""
    cdrs = []
    while len(cdrs) < count:
        frame = await asyncio.wait_for(reader.readuntil(FRAME_END), 10)
        if frame.startswith(b"Event: Cdr\r\n"):
            cdrs.append(parse_frame(frame))
    return cdrs


async def place_calls_over_ami(spool: Path, calls: int) -> tuple[PbxTally, list[list[tuple[str, str]]]]:
    """Place calls through a real FakeAmiServer and read the Cdr events back as an AMI client."""
    async with FakeAmiServer({"demo": AmiUser("pw")}) as ami:
        reader, writer = await asyncio.open_connection("127.0.0.1", ami.port, limit=1 << 20)
        try:
            await reader.readline()  # banner
            writer.write(encode_frame([("Action", "Login"), ("Username", "demo"), ("Secret", "pw")]))
            await ami.wait_for_logins(1)
            simulator = PbxSimulator(ami, spool, seed=7)
            for _ in range(calls):
                await simulator.place_call()
            await ami.drain()
            frames = await read_cdr_frames(reader, len(simulator.tally.cdrs))
        finally:
            writer.close()
            await writer.wait_closed()
    return simulator.tally, frames


async def test_the_simulated_pbx_sends_a_realistic_call_mix_as_cdr_events(tmp_path: Path) -> None:
    tally, frames = await place_calls_over_ami(tmp_path, 150)

    assert tally.placed == 150 and tally.unheard == 0
    assert set(tally.calls) == {
        "internal", "outbound", "inbound", "queue", "forwarded", "no_answer", "busy", "congestion",
    }  # fmt: skip
    assert [(dict(f)["UniqueID"], dict(f)["Sequence"]) for f in frames] == tally.cdrs
    assert len(set(tally.cdrs)) == len(tally.cdrs)  # (UniqueID, Sequence) identifies each CDR
    by_call: defaultdict[str, list[dict[str, str]]] = defaultdict(list)
    for headers in frames:
        assert [key for key, _ in headers] == CDR_MANAGER_ORDER
        fields = dict(headers)
        assert LOCAL_TIME.fullmatch(fields["StartTime"]) and LOCAL_TIME.fullmatch(fields["EndTime"])
        assert fields["AnswerTime"] == "" or LOCAL_TIME.fullmatch(fields["AnswerTime"])
        answered = fields["Disposition"] == "ANSWERED"
        assert (fields["AnswerTime"] != "") == answered
        assert int(fields["BillableSeconds"]) <= int(fields["Duration"])
        by_call[fields["LinkedID"]].append(fields)

    queue_attempts = [f for f in map(dict, frames) if f["Destination"] == "s"]
    assert queue_attempts and len(queue_attempts) == tally.queue_attempts
    assert {(f["Disposition"], f["Duration"], f["AnswerTime"]) for f in queue_attempts} == {
        ("NO ANSWER", "0", "")
    }
    hangup = [f for f in map(dict, frames) if f["Destination"] == "h"]
    assert {f["Disposition"] for f in hangup} >= {"ANSWERED", "NO ANSWER"}
    assert any(f["Disposition"] != "ANSWERED" and f["Duration"] == "0" for f in hangup)
    multi_leg = [legs for legs in by_call.values() if len({leg["UniqueID"] for leg in legs}) > 1]
    assert len(multi_leg) >= 10
    assert all(any(leg["UniqueID"] == leg["LinkedID"] for leg in legs) for legs in by_call.values())
    assert {f["Disposition"] for f in map(dict, frames)} == {"ANSWERED", "NO ANSWER", "BUSY", "CONGESTION"}
    assert any(not f["CallerID"].isascii() for f in map(dict, frames))


async def test_answered_calls_leave_a_mixmonitor_wav_named_after_their_uniqueid(tmp_path: Path) -> None:
    tally, frames = await place_calls_over_ami(tmp_path, 60)

    answered_uniqueids = {dict(f)["UniqueID"] for f in frames if dict(f)["Disposition"] == "ANSWERED"}
    files = sorted(await asyncio.to_thread(lambda: list(tmp_path.iterdir())))
    assert files and sorted(path.name for path in files) == sorted(tally.recordings)
    for path in files:
        uniqueid = re.fullmatch(r"[a-z]+-\w+-\w+-[0-9]{8}-[0-9]{6}-([0-9]+\.[0-9]+)\.wav", path.name)
        assert uniqueid is not None and uniqueid.group(1) in answered_uniqueids
        assert path.stat().st_size >= 1024  # RECORDING_MIN_FILE_SIZE's default
        with wave.open(str(path)) as audio:
            assert (audio.getframerate(), audio.getnchannels(), audio.getsampwidth()) == (8000, 1, 2)
            assert audio.getnframes() * 2 + 44 == path.stat().st_size  # the header is complete


def lossy_summary() -> Summary:
    tally = PbxTally(calls=Counter(internal=3), cdrs=[("1.1", "1"), ("1.2", "2"), ("1.3", "3"), ("1.4", "4")])
    tally.recordings = {"internal-102-101-20261127-101500-1.1.wav": "ab" * 32}
    cdrs = CdrAudit(generated=4, stored=3, states=Counter({State.SENT: 2, State.PENDING: 1}), received_once=1)
    cdrs.duplicated = 1
    recordings = RecordingAudit(active=True, written=1, counts=Counts(1, 0, 0, 0, 1))
    return Summary(DemoOptions(), tally, cdrs, recordings, drained=False, elapsed_s=3.0, outbox="x.db")


def test_the_verdict_names_what_was_lost() -> None:
    summary = lossy_summary()

    found = problems(summary)
    assert found == [
        "1 generated CDR(s) are not in the outbox",
        "1 CDR(s) still pending: the backlog did not drain in time",
        "1 CDR(s) reached the API more than once",
        "1 recording(s) never reached the API",
    ]
    report = "\n".join(render_summary(summary))
    assert "nothing lost" not in report
    assert "Verdict: something was lost or went wrong:" in report


def scrubbed_env(home: Path, **extra: str) -> dict[str, str]:
    """Only what a bare shell has: no connector variables at all (unless given in `extra`)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "TMPDIR": str(home)}
    return env | extra


def run_demo(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m connector demo ARGS` in a folder holding a broken .env, which must be ignored."""
    (tmp_path / ".env").write_text(
        "API_KEY=not-a-key\nAMI_PORT=nope\nCDR_BATCH_SIZE=-1\nDATA_DIR=/nonexistent\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "connector", "demo", *args],
        env=scrubbed_env(tmp_path, **env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def summary_number(report: str, label: str) -> int:
    """The number on the summary line that starts with `label`."""
    found = re.search(rf"^  {re.escape(label)} +([0-9]+)", report, re.MULTILINE)
    assert found is not None, f"no {label!r} line in:\n{report}"
    return int(found.group(1))


def check_nothing_lost(result: subprocess.CompletedProcess[str], calls: int) -> str:
    report = result.stdout
    assert result.returncode == 0, f"stdout:\n{report}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert summary_number(report, "calls placed") == calls
    generated = summary_number(report, "CDRs generated")
    sent = summary_number(report, "sent to the API")
    assert summary_number(report, "stored in the outbox") == generated
    assert sent > 0 and sent + summary_number(report, "filtered") == generated
    assert summary_number(report, "received by the API") == sent
    assert summary_number(report, "failed") == summary_number(report, "still pending") == 0
    assert "0 duplicate(s)" in report
    queue_attempts = re.search(r"queue attempts ([0-9]+)", report)
    assert queue_attempts and f"queue_attempt {queue_attempts.group(1)}" in report
    assert f"Verdict: nothing lost. All {generated} CDRs generated are in the outbox" in report
    recordings = re.search(
        r"recordings +([0-9]+) written, ([0-9]+) queued, ([0-9]+) uploaded, ([0-9]+) received", report
    )
    assert recordings is not None, report
    written = int(recordings.group(1))
    assert written > 0 and [int(n) for n in recordings.groups()] == [written] * 4
    return report


def test_demo_delivers_every_call_with_no_configuration(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--duration", "3", "--rate", "20")

    check_nothing_lost(result, calls=60)
    assert "calls" in result.stderr and "backlog" in result.stderr  # the progress lines
    assert not (tmp_path / "outbox.db").exists() and not list(tmp_path.glob("connector-demo-*"))


def test_demo_outage_grows_the_backlog_then_drains_it(tmp_path: Path) -> None:
    # Variables a user may have set for a real connector must change nothing.
    stray = {
        "API_KEY": "sk_wrong",
        "AMI_HOST": "192.0.2.1",
        "AMI_PORT": "1",
        "API_BASE_URL": "http://192.0.2.1",
    }
    data_dir = tmp_path / "kept"

    result = run_demo(
        tmp_path, "--duration", "4", "--rate", "15", "--outage", "2", "--data-dir", str(data_dir), **stray
    )

    report = check_nothing_lost(result, calls=60)
    outage_line = re.search(
        r"API outage +2s +([0-9]+) request\(s\) answered 503; the backlog peaked at ([0-9]+)", report
    )
    assert outage_line is not None, report
    assert int(outage_line.group(1)) >= 1 and int(outage_line.group(2)) >= 1
    assert "API DOWN" in result.stderr
    assert (data_dir / "outbox.db").exists()
