"""Recording durations read from the files themselves: WAV header, GSM size, MP3 frames.

Every reader answers `None` when it cannot tell (unknown format, damaged header); callers keep such
files rather than guess. Only headers and frame headers are read, never the whole file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

# Placeholder data sizes: Asterisk's format_wav writes 0 and fills the real sizes in on close;
# streaming writers (and RF64 before its ds64 chunk) use 0xFFFFFFFF.
WAV_PLACEHOLDER_SIZES = (0, 0xFFFFFFFF)
WAV_MAX_CHUNKS = 256  # a sane WAV has a handful; stop walking garbage early
# Formats whose data is whole sample frames: duration = frames / rate, exact to the sample.
_FRAME_FORMATS = frozenset({0x0001, 0x0003, 0x0006, 0x0007})  # PCM, IEEE float, A-law, mu-law
_EXTENSIBLE = 0xFFFE

GSM_FRAME_BYTES = 33  # one GSM 06.10 frame: 160 samples at 8 kHz
GSM_FRAME_S = 0.020

_MPEG1_L3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2_L3_KBPS = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}
_SYNC_BLOCK = 1 << 16


@dataclass(frozen=True)
class AudioInfo:
    """What the file says about itself."""

    duration_s: float | None
    """Seconds of audio; None when the format or the header does not tell."""
    finished: bool = True
    """False while a WAV header still carries placeholder sizes (the writer has not closed it)."""


def probe(path: Path, size: int, *, want_duration: bool = True) -> AudioInfo:
    """Read the duration (and for WAV, whether the writer finished) of one recording file."""
    extension = path.suffix.lower()
    if extension == ".wav":
        with path.open("rb") as stream:
            return wav_info(stream, size)
    if extension == ".gsm":
        return AudioInfo(gsm_duration(size))
    if extension == ".mp3" and want_duration:
        with path.open("rb") as stream:
            return AudioInfo(mp3_duration(stream))
    return AudioInfo(None)


def gsm_duration(size: int) -> float:
    """Seconds in a raw GSM 06.10 file: whole 33-byte frames of 20 ms."""
    return (size // GSM_FRAME_BYTES) * GSM_FRAME_S


# ---------------------------------------------------------------------------------------------
# WAV


@dataclass(frozen=True)
class WavFormat:
    """The fields of a `fmt ` chunk that durations need."""

    tag: int
    channels: int
    rate: int
    byte_rate: int
    block_align: int

    def seconds(self, data_bytes: int) -> float | None:
        """Seconds held by `data_bytes` bytes of sample data."""
        if self.tag in _FRAME_FORMATS and self.block_align > 0 and self.rate > 0:
            return (data_bytes // self.block_align) / self.rate
        if self.byte_rate > 0:  # compressed (GSM 6.10 in WAV, ADPCM, …): the average byte rate
            return data_bytes / self.byte_rate
        return None


def parse_fmt(body: bytes) -> WavFormat | None:
    """Parse a `fmt ` chunk body, resolving WAVE_FORMAT_EXTENSIBLE to its sub-format."""
    if len(body) < 14:
        return None
    tag = int.from_bytes(body[0:2], "little")
    if tag == _EXTENSIBLE and len(body) >= 26:
        tag = int.from_bytes(body[24:26], "little")  # first two bytes of the SubFormat GUID
    return WavFormat(
        tag=tag,
        channels=int.from_bytes(body[2:4], "little"),
        rate=int.from_bytes(body[4:8], "little"),
        byte_rate=int.from_bytes(body[8:12], "little"),
        block_align=int.from_bytes(body[12:14], "little"),
    )


def wav_info(stream: BinaryIO, file_size: int) -> AudioInfo:
    """Walk the RIFF chunks up to `data`; tell the duration and whether the sizes are final."""
    head = stream.read(12)
    if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64", b"BW64") or head[8:12] != b"WAVE":
        return AudioInfo(None)
    fmt: WavFormat | None = None
    ds64_data: int | None = None
    offset = 12
    for _ in range(WAV_MAX_CHUNKS):
        stream.seek(offset)
        header = stream.read(8)
        if len(header) < 8:
            break
        chunk_id, size = header[:4], int.from_bytes(header[4:8], "little")
        if chunk_id == b"data":
            return _data_info(fmt, size, ds64_data, file_size - (offset + 8))
        if chunk_id == b"fmt ":
            fmt = parse_fmt(stream.read(min(size, 64)))
        elif chunk_id == b"ds64":
            ds64 = stream.read(16)
            ds64_data = int.from_bytes(ds64[8:16], "little") if len(ds64) == 16 else None
        offset += 8 + size + (size & 1)  # chunks are padded to an even length
        if offset >= file_size:
            break
    return AudioInfo(None)


def _data_info(fmt: WavFormat | None, declared: int, ds64_data: int | None, available: int) -> AudioInfo:
    """Duration from the data chunk; placeholder sizes mean the writer has not finished."""
    available = max(0, available)
    if declared == 0xFFFFFFFF and ds64_data:
        declared = ds64_data  # RF64: the real size lives in the ds64 chunk
    unfinished = declared in WAV_PLACEHOLDER_SIZES and available > 0
    data_bytes = available if unfinished else min(declared, available)
    duration = fmt.seconds(data_bytes) if fmt else None
    return AudioInfo(duration, finished=not unfinished)


# ---------------------------------------------------------------------------------------------
# MP3


@dataclass(frozen=True)
class Mp3Frame:
    """One MPEG audio layer III frame header, decoded."""

    length: int
    samples: int
    rate: int
    side_info: int  # bytes of side information after the header (and CRC)
    crc: bool

    @property
    def seconds(self) -> float:
        """Seconds of audio this frame carries."""
        return self.samples / self.rate


def parse_mp3_header(header: bytes) -> Mp3Frame | None:
    """Decode a 4-byte MPEG-1/2/2.5 layer III frame header; None if it is not one."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return None
    version = (header[1] >> 3) & 3  # 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5, 1: reserved
    layer = (header[1] >> 1) & 3  # 1: layer III
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 3
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return None  # reserved values, or free format (no computable frame length)
    mpeg1 = version == 3
    mono = header[3] >> 6 == 3
    kbps = (_MPEG1_L3_KBPS if mpeg1 else _MPEG2_L3_KBPS)[bitrate_index]
    rate = _MPEG_RATES[version][rate_index]
    padding = (header[2] >> 1) & 1
    return Mp3Frame(
        length=(144 if mpeg1 else 72) * kbps * 1000 // rate + padding,
        samples=1152 if mpeg1 else 576,
        rate=rate,
        side_info=(17 if mono else 32) if mpeg1 else (9 if mono else 17),
        crc=not header[1] & 1,
    )


def _read_at(stream: BinaryIO, offset: int, count: int) -> bytes:
    stream.seek(offset)
    return stream.read(count)


def skip_id3v2(stream: BinaryIO) -> int:
    """Offset of the first byte after any ID3v2 tags at the start of the file."""
    offset = 0
    while True:
        header = _read_at(stream, offset, 10)
        if len(header) < 10 or header[:3] != b"ID3":
            return offset
        size = 0
        for byte in header[6:10]:  # "syncsafe" integer: 7 bits per byte
            size = (size << 7) | (byte & 0x7F)
        offset += 10 + size + (10 if header[5] & 0x10 else 0)  # footer flag


def _frame_at(stream: BinaryIO, offset: int, size: int) -> Mp3Frame | None:
    """A frame at `offset` followed by another frame (or by the end of the file): a true sync."""
    frame = parse_mp3_header(_read_at(stream, offset, 4))
    if frame is None or offset + frame.length > size:
        return None
    end = offset + frame.length
    if end + 4 > size:
        return frame  # the file ends here (or within a few stray bytes)
    return frame if parse_mp3_header(_read_at(stream, end, 4)) else None


def find_sync(stream: BinaryIO, offset: int, size: int) -> int | None:
    """Offset of the next genuine frame at or after `offset`, or None."""
    while offset < size:
        block = _read_at(stream, offset, _SYNC_BLOCK)
        if not block:
            return None
        at = block.find(b"\xff")
        while at != -1:
            if _frame_at(stream, offset + at, size):
                return offset + at
            at = block.find(b"\xff", at + 1)
        offset += len(block)
    return None


def vbr_frame_count(stream: BinaryIO, offset: int, frame: Mp3Frame) -> int | None:
    """The frame count of a Xing/Info or VBRI header in the frame at `offset`, if any."""
    xing_at = offset + 4 + frame.side_info
    for candidate in (xing_at + 2, xing_at) if frame.crc else (xing_at,):
        tag = _read_at(stream, candidate, 12)
        if tag[:4] in (b"Xing", b"Info"):
            flags = int.from_bytes(tag[4:8], "big")
            return int.from_bytes(tag[8:12], "big") if flags & 1 and len(tag) == 12 else 0
    vbri = _read_at(stream, offset + 36, 18)
    if vbri[:4] == b"VBRI" and len(vbri) == 18:
        return int.from_bytes(vbri[14:18], "big")
    return None


def mp3_duration(stream: BinaryIO) -> float | None:
    """Seconds of audio in an MP3: the Xing/Info/VBRI frame count, else the sum of its frames."""
    size = stream.seek(0, io.SEEK_END)
    first = find_sync(stream, skip_id3v2(stream), size)
    if first is None:
        return None
    frame = parse_mp3_header(_read_at(stream, first, 4))
    assert frame is not None  # find_sync only returns valid frames
    counted = vbr_frame_count(stream, first, frame)
    if counted:
        return counted * frame.samples / frame.rate
    # A tag frame without a count carries no audio itself: start walking after it.
    return _walk_frames(stream, first + frame.length if counted == 0 else first, size)


def _walk_frames(stream: BinaryIO, offset: int, size: int) -> float:
    """Sum frame durations from `offset`, re-synchronising over junk; a cut last frame is left out."""
    seconds = 0.0
    while offset + 4 <= size:
        frame = parse_mp3_header(_read_at(stream, offset, 4))
        if frame is None:
            found = find_sync(stream, offset + 1, size)
            if found is None:
                break
            offset = found
            continue
        if offset + frame.length > size:
            break
        seconds += frame.seconds
        offset += frame.length
    return seconds
