"""A PBX simulator: the call mix (call_mix.py) sent as real Cdr events through FakeAmiServer.

Each call's CDRs go to the logged-in AMI clients when the call ends; when someone answered, its
MixMonitor recording (a finished 8 kHz WAV) is written to the spool folder. The tally keeps what
was produced, so that `connector demo` can check that nothing was lost on the way.
"""

from __future__ import annotations

import array
import asyncio
import hashlib
import itertools
import math
import random
import time
import wave
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from connector.demo.ami_server import FakeAmiServer, encode_frame
from connector.demo.call_mix import (
    MAX_RECORDING_S,
    SCENARIOS,
    Call,
    CallFactory,
    Headers,
    Recording,
    Scenario,
)

SAMPLE_RATE = 8000  # MixMonitor's WAV: 8 kHz, mono, 16-bit PCM
TONE_HZ = 425.0


@dataclass
class PbxTally:
    """What the simulator produced, for checking that nothing was lost on the way."""

    calls: Counter[str] = field(default_factory=Counter)
    dispositions: Counter[str] = field(default_factory=Counter)
    cdrs: list[tuple[str, str]] = field(default_factory=list)  # (UniqueID, Sequence), in order
    h_cdrs: int = 0
    queue_attempts: int = 0
    unheard: int = 0  # CDRs sent while no AMI client was logged in: gone, as with Asterisk
    recordings: dict[str, str] = field(default_factory=dict)  # file name → SHA-256

    @property
    def placed(self) -> int:
        """How many calls were placed."""
        return sum(self.calls.values())


def tone(seconds: float) -> bytes:
    """16-bit little-endian PCM of a quiet tone, as a recording of the call's audio stands in."""
    frames = int(SAMPLE_RATE * seconds)
    step = 2 * math.pi * TONE_HZ / SAMPLE_RATE
    samples = array.array("h", (int(2000 * math.sin(step * n)) for n in range(frames)))
    return samples.tobytes()  # array uses the machine's order: x86 and ARM are little-endian


def write_wav(path: Path, audio: bytes) -> str:
    """Write a finished WAV file (header complete, as MixMonitor leaves it); return its SHA-256."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(audio)
    return hashlib.sha256(path.read_bytes()).hexdigest()


class PbxSimulator:
    """Places calls: sends their Cdr events to the AMI clients and writes their recordings."""

    def __init__(
        self,
        ami: FakeAmiServer,
        spool: Path | None,
        *,
        zone: ZoneInfo | None = None,
        seed: int | None = None,
    ) -> None:
        self.ami = ami
        self.spool = spool
        self.factory = CallFactory(random.Random(seed), zone)
        self.tally = PbxTally()
        self._audio = tone(MAX_RECORDING_S)
        scenarios, weights = zip(*SCENARIOS, strict=True)
        self._scenarios: tuple[Scenario, ...] = scenarios
        self._weights: tuple[int, ...] = weights

    def next_call(self, now: float | None = None) -> Call:
        """Build the next call of the mix, ending now."""
        scenario = self.factory.rng.choices(self._scenarios, self._weights)[0]
        return scenario(self.factory, time.time() if now is None else now)

    async def place_call(self) -> Call:
        """Place one call: send its CDRs as Asterisk does when it ends, then close its recording."""
        call = self.next_call()
        for headers in call.cdrs:
            if not self.ami.send_event(encode_frame(headers)):
                self.tally.unheard += 1
            self._count(headers)
        self.tally.calls[call.scenario] += 1
        if call.recording is not None and self.spool is not None:
            await self._record(call.recording)
        return call

    def _count(self, headers: Headers) -> None:
        fields = dict(headers)
        self.tally.cdrs.append((fields["UniqueID"], fields["Sequence"]))
        self.tally.dispositions[fields["Disposition"]] += 1
        self.tally.h_cdrs += fields["Destination"] == "h"
        self.tally.queue_attempts += fields["Destination"] == "s"

    async def _record(self, recording: Recording) -> None:
        assert self.spool is not None
        audio = self._audio[: 2 * int(SAMPLE_RATE * recording.seconds)]
        path = self.spool / recording.name
        self.tally.recordings[recording.name] = await asyncio.to_thread(write_wav, path, audio)

    async def run(self, rate: float, duration_s: float, stop: asyncio.Event | None = None) -> int:
        """Place `rate` calls a second for `duration_s` seconds (or until `stop`); return how many."""
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        began = loop.time()
        placed = 0
        for due_at in _schedule(rate, duration_s):
            delay = began + due_at - loop.time()
            if delay > 0:
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except TimeoutError:
                    pass
            if stop.is_set():
                break
            await self.place_call()
            placed += 1
            await self.ami.drain()
        return placed


def _schedule(rate: float, duration_s: float) -> Iterator[float]:
    """When each call is due, in seconds from the start: evenly spaced, the first at once."""
    for index in itertools.count():
        due_at = index / rate
        if due_at >= duration_s:
            return
        yield due_at
