"""Build small audio files by hand for the recording tests: WAV headers, MP3 frames, GSM."""

from __future__ import annotations

import struct
import wave
from pathlib import Path

SILENCE_8K_MONO_S = 16000  # bytes per second of 8 kHz, 16-bit mono signed linear


def write_wav(path: Path, seconds: float, rate: int = 8000, channels: int = 1) -> Path:
    """Write a finished 16-bit PCM WAV of `seconds` of silence with the stdlib wave module."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\x00\x00" * channels * round(rate * seconds))
    return path


def fmt_chunk(tag: int, channels: int, rate: int, block_align: int, bits: int) -> bytes:
    """A plain 16-byte `fmt ` chunk."""
    body = struct.pack("<HHIIHH", tag, channels, rate, rate * block_align, block_align, bits)
    return b"fmt " + struct.pack("<I", len(body)) + body


def extensible_fmt_chunk(channels: int, rate: int, bits: int, sub_tag: int = 1) -> bytes:
    """A 40-byte WAVE_FORMAT_EXTENSIBLE `fmt ` chunk whose SubFormat is `sub_tag`."""
    align = channels * bits // 8
    guid = struct.pack("<H", sub_tag) + bytes.fromhex("000000001000800000aa00389b71")
    body = struct.pack("<HHIIHH", 0xFFFE, channels, rate, rate * align, align, bits)
    body += struct.pack("<HHI", 22, bits, 0x4) + guid
    return b"fmt " + struct.pack("<I", len(body)) + body


def chunk(chunk_id: bytes, body: bytes) -> bytes:
    """A RIFF chunk with its pad byte when the body length is odd."""
    return chunk_id + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) % 2 else b"")


def riff(*chunks: bytes, riff_size: int | None = None, form: bytes = b"RIFF") -> bytes:
    """Wrap chunks in a RIFF/WAVE header (riff_size overrides the computed size)."""
    body = b"WAVE" + b"".join(chunks)
    return form + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def asterisk_wav_header(data_size: int = 0) -> bytes:
    """The 44-byte header format_wav writes: sizes 0 until the file is closed."""
    fmt = fmt_chunk(1, 1, 8000, 2, 16)
    return riff(fmt, riff_size=0 if data_size == 0 else 36 + data_size) + (
        b"data" + struct.pack("<I", data_size)
    )


# --- MP3 --------------------------------------------------------------------------------------

# (version bits, bitrate index, sample-rate index) → one layer III header, no CRC, mono.
MPEG1_128K_44100 = (3, 9, 0)  # 128 kbit/s, 44.1 kHz: 417-byte frames, 1152 samples
MPEG2_64K_22050 = (2, 8, 0)  # 64 kbit/s, 22.05 kHz: 208-byte frames, 576 samples
MPEG25_8K_8000 = (0, 1, 2)  # 8 kbit/s, 8 kHz: 72-byte frames, 576 samples


def mp3_header(version: int, bitrate: int, rate: int, padding: int = 0, crc: bool = False) -> bytes:
    """A 4-byte MPEG layer III frame header (mono)."""
    second = 0xE0 | (version << 3) | (1 << 1) | (0 if crc else 1)
    third = (bitrate << 4) | (rate << 2) | (padding << 1)
    return bytes([0xFF, second, third, 0xC0])


def mp3_frame(kind: tuple[int, int, int], length: int, padding: int = 0, fill: int = 0) -> bytes:
    """One frame of `length` bytes (header + `fill` bytes)."""
    return mp3_header(*kind, padding=padding) + bytes([fill]) * (length - 4)


def id3v2(payload: bytes) -> bytes:
    """An ID3v2.4 tag around `payload` (size as a syncsafe integer)."""
    size = len(payload)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    return b"ID3\x04\x00\x00" + syncsafe + payload


def xing_frame(kind: tuple[int, int, int], length: int, side_info: int, frames: int | None) -> bytes:
    """A frame carrying a Xing header (with a frame count unless `frames` is None)."""
    tag = b"Xing" + struct.pack(">I", 1 if frames is not None else 0)
    if frames is not None:
        tag += struct.pack(">I", frames)
    body = bytes(side_info) + tag
    return mp3_header(*kind) + body + bytes(length - 4 - len(body))


def gsm_bytes(frames: int) -> bytes:
    """Raw GSM 06.10: 33-byte frames (the signature nibble 0xD starts each)."""
    return (b"\xd0" + bytes(32)) * frames
