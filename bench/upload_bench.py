"""Upload benchmark: one large recording through the RecordingUploader, next to a bare httpx upload.

The loopback receiver runs in its own process (`python -m tests.doubles.receiver`), checking every
upload's size and sha256 as it arrives. In this process, for each round and in rotating order:

    bare      httpx.AsyncClient streaming the same multipart body (sha256 computed beforehand,
              the file read synchronously on the event loop): the best case for this client stack
    hashing   the same, but hashing each chunk on the event loop and sending the sha256 after the
              file: what the contract costs when done the simple way (for information)
    uploader  the real path: outbox row → RecordingUploader → ApiClient.upload_recording (reads in
              worker threads, sha256 computed on the way and sent after the file part) → row sent

It prints MB/s (MB = 10^6 bytes) of each, their CPU time (all threads, and the event loop's
thread alone), the uploader's share of the bare rate, and the uploader's RSS growth (VmRSS sampled
every 10 ms during its uploads, minus VmRSS just before; measured here, in the uploading process).
Targets: >= 80% of the bare rate (median against median), RSS growth <= 20 MB.

    python bench/upload_bench.py            # a 500 MB file, 5 uploads each way
    python bench/upload_bench.py --smoke    # a 20 MB file, 1 upload each way (CI: checks that it works)
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path

import httpx

from connector.api.client import ApiClient
from connector.cdr.mapping import MappingOptions
from connector.outbox.records import NewRecording, State
from connector.outbox.store import Store
from connector.recordings.uploader import RecordingUploader, UploadSettings
from connector.timeutil import utc_now

ROOT = Path(__file__).resolve().parent.parent  # where `python -m tests.doubles.receiver` runs
KEY = "sk_" + "bench" * 6 + "xx"
TARGET_SHARE = 0.80
TARGET_RSS_MB = 20.0
CHUNK = 256 * 1024
MB = 1_000_000


def rss_mb() -> float:
    """This process's resident set size now (VmRSS), in MB of 2^20 bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """Sample VmRSS in a thread; `peak` is the highest value seen."""

    def __init__(self, every_s: float = 0.01) -> None:
        self.peak = rss_mb()
        self._every_s = every_s
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._done.wait(self._every_s):
            self.peak = max(self.peak, rss_mb())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def make_file(path: Path, size: int, sparse: bool) -> None:
    """Write `size` bytes of random data (or a sparse file of zeros)."""
    with path.open("wb") as out:
        if sparse:
            out.truncate(size)
            return
        block = os.urandom(4 * 1024 * 1024)
        written = 0
        while written < size:
            piece = block[: size - written]
            out.write(piece)
            written += len(piece)
            block = block[1:] + block[:1]  # every block differs a little: no dedupe anywhere


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def start_receiver(max_body: int) -> tuple[subprocess.Popen[str], str]:
    """Start the loopback receiver process (no data dir: it hashes the bytes and drops them)."""
    command = [sys.executable, "-m", "tests.doubles.receiver", "--port", "0", "--api-key", KEY]
    command += ["--max-body-bytes", str(max_body)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("READY "):
        process.kill()
        raise SystemExit(f"receiver did not start: {line!r}")
    return process, line.removeprefix("READY ").strip()


def stop_receiver(process: subprocess.Popen[str]) -> dict[str, object]:
    """Stop the receiver and return its final summary."""
    process.terminate()
    output, _ = process.communicate(timeout=30)
    return dict(json.loads(output.strip().splitlines()[-1]))


@dataclass(frozen=True)
class Sample:
    """One upload: wall-clock seconds, CPU seconds of this process (every thread) and of its event loop."""

    wall_s: float
    cpu_s: float
    loop_cpu_s: float


class Stopwatch:
    """Measure wall-clock and process CPU time of a block."""

    def __enter__(self) -> Stopwatch:
        self._wall, self._cpu, self._loop = time.perf_counter(), time.process_time(), time.thread_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sample = Sample(
            time.perf_counter() - self._wall, time.process_time() - self._cpu, time.thread_time() - self._loop
        )


def text_part(boundary: str, name: str, value: str) -> str:
    """One multipart text field."""
    return f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'


def multipart_head(boundary: str, path: Path, size: int, sha256: str | None, recording_id: str) -> bytes:
    """The text fields (with the sha256 when it is known beforehand) and the file part's header."""
    fields = {
        "recording_id": recording_id,
        "file_name": path.name,
        "file_size": str(size),
        "recorded_at": "2026-11-27T10:00:00Z",
    }
    if sha256 is not None:
        fields["sha256"] = sha256
    head = "".join(text_part(boundary, name, value) for name, value in fields.items())
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="{path.name}"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    )
    return head.encode()


async def bare_upload(base_url: str, path: Path, sha256: str | None, recording_id: str) -> Sample:
    """A plain httpx streaming multipart upload of `path`, read on the event loop.

    With `sha256` None, the file is hashed on the event loop as it goes and the sha256 sent after it.
    """
    boundary = secrets.token_hex(16)
    size = (await asyncio.to_thread(path.stat)).st_size
    head = multipart_head(boundary, path, size, sha256, recording_id)
    digest = hashlib.sha256()
    trailer_length = len(text_part(boundary, "sha256", "0" * 64)) if sha256 is None else 0

    async def body() -> AsyncIterator[bytes]:
        yield head
        with open(path, "rb") as source:  # noqa: ASYNC230 (the baseline: plain blocking reads)
            while chunk := source.read(CHUNK):
                if sha256 is None:
                    digest.update(chunk)
                yield chunk
        trailer = text_part(boundary, "sha256", digest.hexdigest()) if sha256 is None else ""
        yield f"\r\n{trailer}--{boundary}--\r\n".encode()

    headers = {
        "Authorization": f"Bearer {KEY}",
        "User-Agent": "bench",
        "X-Asterisk-Hostname": "bench",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Content-Length": str(len(head) + size + len(f"\r\n--{boundary}--\r\n") + trailer_length),
    }
    async with httpx.AsyncClient(timeout=120) as client:
        with Stopwatch() as watch:
            response = await client.post(base_url + "/mqs/recording", content=body(), headers=headers)
    if response.status_code != 200:
        raise SystemExit(f"bare upload answered {response.status_code}: {response.text}")
    return watch.sample


def touch(path: Path) -> os.stat_result:
    """Move the mtime on a little, so that the same file makes a new outbox row."""
    status = path.stat()
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns + 1000))
    return path.stat()


class UploaderRun:
    """The real upload path, set up once: an outbox, the API client and a RecordingUploader."""

    def __init__(self, folder: Path, base_url: str) -> None:
        self.folder = folder
        self.base_url = base_url

    async def __aenter__(self) -> UploaderRun:
        self.store = await Store.open(self.folder / "outbox.db")
        self.api = ApiClient(base_url=self.base_url, api_key=KEY, hostname="bench", timeout_s=120)
        options = MappingOptions(zone=UTC, internal_pattern=re.compile(r"^[0-9]{2,6}$"))
        pace = UploadSettings(cdr_wait_s=0.0, watch_paths=(self.folder,))
        self.uploader = RecordingUploader(self.store, self.api, options, pace, asyncio.Event())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.api.aclose()
        await self.store.close()

    async def upload(self, path: Path) -> Sample:
        """Queue `path` as a new recording and let the uploader deliver it (take, upload, mark sent)."""
        status = await asyncio.to_thread(touch, path)
        record = NewRecording(str(path), status.st_size, status.st_mtime, utc_now(), "1795735443.50")
        await self.store.append_recordings([record])
        with Stopwatch() as watch:
            handled = await self.uploader.run_once()
        rows = await self.store.get_recordings(list(range(1, 100)))
        if handled != 1 or rows[-1].state is not State.SENT:
            raise SystemExit(f"uploader did not deliver: {rows[-1]}")
        return watch.sample


@dataclass
class Results:
    """Every sample of each kind, and the uploader's largest RSS growth."""

    bare: list[Sample] = field(default_factory=list)
    hashing: list[Sample] = field(default_factory=list)
    uploader: list[Sample] = field(default_factory=list)
    growth_mb: float = 0.0


KINDS = ("bare", "hashing", "uploader")


async def measure(folder: Path, base_url: str, big: Path, rounds: int) -> Results:
    """Upload `big` `rounds` times each way, rotating which goes first."""
    small = folder / "warmup-1795735443.51.wav"
    await asyncio.to_thread(make_file, small, 1024 * 1024, False)
    sha256 = await asyncio.to_thread(file_sha256, big)
    results = Results()
    async with UploaderRun(folder, base_url) as run:
        await run.upload(small)  # warm up: imports, connection pool, worker threads
        await bare_upload(base_url, small, None, "warm")
        for index in range(rounds):
            for which in KINDS[index % 3 :] + KINDS[: index % 3]:
                if which == "bare":
                    results.bare.append(await bare_upload(base_url, big, sha256, f"bare-{index}"))
                elif which == "hashing":
                    results.hashing.append(await bare_upload(base_url, big, None, f"hashing-{index}"))
                else:
                    before = rss_mb()
                    with RssSampler() as sampler:
                        results.uploader.append(await run.upload(big))
                    results.growth_mb = max(results.growth_mb, sampler.peak - before)
    return results


def rates(size: int, samples: list[Sample]) -> tuple[float, float]:
    """The best and the median rate in MB/s."""
    ordered = sorted(size / MB / sample.wall_s for sample in samples)
    return ordered[-1], statistics.median(ordered)


def rate_line(name: str, size: int, samples: list[Sample]) -> str:
    """Format one kind's rates and CPU time."""
    best, median = rates(size, samples)
    cpu = statistics.median(sample.cpu_s for sample in samples)
    loop_cpu = statistics.median(sample.loop_cpu_s for sample in samples)
    return (
        f"{name:<22} {best:7.1f} MB/s best, {median:7.1f} median"
        f"  (CPU per upload: {cpu:.2f} s, {loop_cpu:.2f} s of it on the event loop)"
    )


def report(size: int, rounds: int, sparse: bool, results: Results, summary: dict[str, object]) -> bool:
    """Print the figures; return whether the targets are met."""
    bare_best, bare_median = rates(size, results.bare)
    uploader_best, uploader_median = rates(size, results.uploader)
    kind = "sparse" if sparse else "random"
    print(f"file                   {size / MB:.0f} MB ({kind}), {rounds} upload(s) each, order rotating")
    print(rate_line("bare httpx upload", size, results.bare))
    print(rate_line("bare + sha256 on loop", size, results.hashing))
    print(rate_line("RecordingUploader", size, results.uploader))
    print(
        f"uploader / bare        {uploader_median / bare_median:7.0%} median against median,"
        f" {uploader_best / bare_best:.0%} best against best (target >= {TARGET_SHARE:.0%})"
    )
    print(f"uploader RSS growth    {results.growth_mb:7.1f} MB        (target <= {TARGET_RSS_MB:.0f} MB)")
    print(f"receiver               {summary['recordings']} recordings, answers {summary['answers']}")
    # Judged on medians: both kinds alternate, so a busy machine slows both alike, while a best
    # figure rewards whichever upload happened to find the machine idle.
    return uploader_median / bare_median >= TARGET_SHARE and results.growth_mb <= TARGET_RSS_MB


async def bench(size: int, rounds: int, sparse: bool, keep: bool, smoke: bool) -> int:
    """Run the benchmark and print the figures; return the exit status."""
    folder = Path(tempfile.mkdtemp(prefix="upload-bench-"))
    big = folder / "big-1795735443.50.wav"
    await asyncio.to_thread(make_file, big, size, sparse)
    receiver, base_url = start_receiver(max_body=size + 1024 * 1024)
    try:
        results = await measure(folder, base_url, big, rounds)
    finally:
        summary = stop_receiver(receiver)
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
    on_target = report(size, rounds, sparse, results, summary)
    # A smoke run checks that the uploads work; speed and memory are only judged on a full run.
    return 0 if smoke or on_target else 1


def main() -> int:
    """Parse the command line and run the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=500, help="file size in MB (10^6 bytes)")
    parser.add_argument("--rounds", type=int, default=5, help="uploads of each kind, alternating order")
    parser.add_argument("--sparse", action="store_true", help="a sparse file of zeros instead of random data")
    parser.add_argument("--smoke", action="store_true", help="20 MB, 1 round (for CI)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    size_mb, rounds = (20, 1) if args.smoke else (args.size_mb, args.rounds)
    return asyncio.run(bench(size_mb * MB, rounds, args.sparse, args.keep, args.smoke))


if __name__ == "__main__":
    sys.exit(main())
