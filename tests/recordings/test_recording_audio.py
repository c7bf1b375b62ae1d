"""Durations read from real files: WAV headers, GSM sizes, MP3 frames."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector.recordings.audio import (
    AudioInfo,
    gsm_duration,
    mp3_duration,
    parse_mp3_header,
    probe,
    wav_info,
)
from tests.paths import RECORDING_FIXTURES
from tests.recordings.media import (
    MPEG1_128K_44100,
    MPEG2_64K_22050,
    MPEG25_8K_8000,
    asterisk_wav_header,
    chunk,
    extensible_fmt_chunk,
    fmt_chunk,
    gsm_bytes,
    id3v2,
    mp3_frame,
    mp3_header,
    riff,
    write_wav,
    xing_frame,
)

FIXTURE_WAV = RECORDING_FIXTURES / "lab-1795735443.50.wav"
MPEG1_FRAME_S = 1152 / 44100


def info_of(path: Path) -> AudioInfo:
    return probe(path, path.stat().st_size)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- WAV --------------------------------------------------------------------------------------


def test_real_asterisk_recording_is_3_96_seconds() -> None:
    assert info_of(FIXTURE_WAV) == AudioInfo(3.96, finished=True)


@pytest.mark.parametrize(("rate", "channels", "seconds"), [(8000, 1, 2.5), (16000, 2, 1.25)])
def test_wave_module_files(tmp_path: Path, rate: int, channels: int, seconds: float) -> None:
    path = write_wav(tmp_path / "x.wav", seconds, rate, channels)
    assert info_of(path) == AudioInfo(seconds, finished=True)


def test_extensible_format_and_odd_chunks_before_data(tmp_path: Path) -> None:
    samples = bytes(2 * 2 * 48000)  # 1 s of 16-bit stereo at 48 kHz
    data = riff(
        extensible_fmt_chunk(2, 48000, 16),
        chunk(b"LIST", b"INFOabc"),  # odd size: a pad byte follows
        chunk(b"junk", b"x"),
        chunk(b"data", samples),
    )
    assert info_of(write(tmp_path / "ext.wav", data)) == AudioInfo(1.0, finished=True)


def test_chunks_after_data_do_not_count_as_audio(tmp_path: Path) -> None:
    data = riff(fmt_chunk(1, 1, 8000, 2, 16), chunk(b"data", bytes(8000)), chunk(b"LIST", bytes(99)))
    assert info_of(write(tmp_path / "tail.wav", data)).duration_s == 0.5


def test_asterisk_style_header_while_recording_is_unfinished(tmp_path: Path) -> None:
    # format_wav leaves both sizes at 0 until the recording is closed.
    path = write(tmp_path / "live.wav", asterisk_wav_header() + bytes(16000 * 3))
    assert info_of(path) == AudioInfo(3.0, finished=False)
    path.write_bytes(asterisk_wav_header(16000 * 3) + bytes(16000 * 3))
    assert info_of(path) == AudioInfo(3.0, finished=True)


def test_streaming_placeholder_size_is_unfinished(tmp_path: Path) -> None:
    header = riff(fmt_chunk(1, 1, 8000, 2, 16), riff_size=0xFFFFFFFF)
    path = write(tmp_path / "stream.wav", header + b"data" + b"\xff" * 4 + bytes(8000))
    assert info_of(path) == AudioInfo(0.5, finished=False)


def test_header_only_file_is_finished_and_empty(tmp_path: Path) -> None:
    assert info_of(write(tmp_path / "empty.wav", asterisk_wav_header())) == AudioInfo(0.0)


def test_declared_size_beyond_the_end_counts_what_is_there(tmp_path: Path) -> None:
    path = write(tmp_path / "cut.wav", asterisk_wav_header(160000) + bytes(16000))
    assert info_of(path) == AudioInfo(1.0, finished=True)


def test_rf64_takes_the_size_from_ds64(tmp_path: Path) -> None:
    ds64 = chunk(b"ds64", struct.pack("<QQQ", 0, 16000, 8000))
    data = riff(ds64, fmt_chunk(1, 1, 8000, 2, 16), riff_size=0xFFFFFFFF, form=b"RF64")
    path = write(tmp_path / "big.wav", data + b"data" + b"\xff" * 4 + bytes(16000))
    assert info_of(path) == AudioInfo(1.0, finished=True)


def test_gsm_in_wav_uses_the_byte_rate(tmp_path: Path) -> None:
    # Asterisk's wav49 (WAV/GSM 6.10, tag 0x31): 65-byte blocks, 1625 bytes per second.
    fmt = chunk(b"fmt ", struct.pack("<HHIIHHHH", 0x31, 1, 8000, 1625, 65, 0, 2, 320))
    path = write(tmp_path / "g.WAV", riff(fmt, chunk(b"fact", bytes(4)), chunk(b"data", bytes(3250))))
    assert info_of(path) == AudioInfo(2.0, finished=True)


@pytest.mark.parametrize(
    "data",
    [b"", b"RIFF", b"RIFF\x00\x00\x00\x00WAVE", b"not a wav file at all, just text" * 10],
)
def test_unreadable_wav_headers_give_no_duration(tmp_path: Path, data: bytes) -> None:
    assert info_of(write(tmp_path / "bad.wav", data)) == AudioInfo(None, finished=True)


def test_data_before_fmt_gives_no_duration(tmp_path: Path) -> None:
    data = riff(chunk(b"data", bytes(100)), fmt_chunk(1, 1, 8000, 2, 16))
    assert info_of(write(tmp_path / "odd.wav", data)).duration_s is None


@given(st.binary(max_size=200))
def test_wav_reader_never_raises(data: bytes) -> None:
    for prefix in (b"", b"RIFF\x00\x00\x00\x00WAVE"):
        blob = prefix + data
        wav_info(io.BytesIO(blob), len(blob))


# --- GSM --------------------------------------------------------------------------------------


def test_gsm_duration_is_20_ms_per_33_byte_frame(tmp_path: Path) -> None:
    assert info_of(write(tmp_path / "a.gsm", gsm_bytes(150))).duration_s == pytest.approx(3.0)
    assert gsm_duration(33 * 50 + 32) == pytest.approx(1.0)  # a partial frame does not count
    assert gsm_duration(0) == 0.0


# --- MP3 --------------------------------------------------------------------------------------


def mp3_of(data: bytes) -> float | None:
    return mp3_duration(io.BytesIO(data))


def test_mpeg1_frames_are_counted() -> None:
    frames = [mp3_frame(MPEG1_128K_44100, 418 if i % 3 == 0 else 417, i % 3 == 0) for i in range(30)]
    assert mp3_of(b"".join(frames)) == pytest.approx(30 * MPEG1_FRAME_S)


@pytest.mark.parametrize(
    ("kind", "length", "frame_s"),
    [(MPEG2_64K_22050, 208, 576 / 22050), (MPEG25_8K_8000, 72, 576 / 8000)],
)
def test_mpeg2_and_2_5_frames(kind: tuple[int, int, int], length: int, frame_s: float) -> None:
    assert mp3_of(mp3_frame(kind, length) * 25) == pytest.approx(25 * frame_s)


def test_id3v2_tag_is_skipped_even_with_sync_like_bytes_inside() -> None:
    tag = id3v2(b"\xff\xfb\x90\xc0" * 50)
    assert mp3_of(tag + mp3_frame(MPEG1_128K_44100, 417) * 10) == pytest.approx(10 * MPEG1_FRAME_S)


def test_xing_frame_count_is_trusted() -> None:
    data = xing_frame(MPEG1_128K_44100, 417, 17, frames=1000) + mp3_frame(MPEG1_128K_44100, 417) * 3
    assert mp3_of(data) == pytest.approx(1000 * MPEG1_FRAME_S)


def test_xing_tag_without_count_is_not_audio() -> None:
    data = xing_frame(MPEG1_128K_44100, 417, 17, frames=None) + mp3_frame(MPEG1_128K_44100, 417) * 4
    assert mp3_of(data) == pytest.approx(4 * MPEG1_FRAME_S)


def test_vbri_frame_count_is_trusted() -> None:
    body = bytes(32) + b"VBRI" + struct.pack(">HHHII", 1, 0, 75, 12345, 500)
    first = mp3_header(*MPEG1_128K_44100) + body + bytes(417 - 4 - len(body))
    assert mp3_of(first + mp3_frame(MPEG1_128K_44100, 417)) == pytest.approx(500 * MPEG1_FRAME_S)


def test_junk_between_frames_and_trailing_tags_are_skipped() -> None:
    frame = mp3_frame(MPEG1_128K_44100, 417)
    id3v1 = b"TAG" + bytes(125)
    data = frame * 5 + b"\x00\xff\x01junk" + frame * 5 + id3v1
    assert mp3_of(data) == pytest.approx(10 * MPEG1_FRAME_S)


def test_a_cut_last_frame_is_not_counted() -> None:
    frame = mp3_frame(MPEG1_128K_44100, 417)
    assert mp3_of(frame * 4 + frame[:200]) == pytest.approx(4 * MPEG1_FRAME_S)


@pytest.mark.parametrize("data", [b"", bytes(5000), b"\xff" * 3000, id3v2(bytes(100))])
def test_no_frames_means_unknown(data: bytes) -> None:
    assert mp3_of(data) is None


def test_mp3_duration_only_when_wanted(tmp_path: Path) -> None:
    path = write(tmp_path / "a.mp3", mp3_frame(MPEG1_128K_44100, 417) * 10)
    size = path.stat().st_size
    assert probe(path, size).duration_s == pytest.approx(10 * MPEG1_FRAME_S)
    assert probe(path, size, want_duration=False) == AudioInfo(None)
    assert probe(write(tmp_path / "a.ogg", b"OggS"), 4) == AudioInfo(None)


@given(st.binary(min_size=4, max_size=4))
def test_any_four_bytes_parse_or_not_without_error(header: bytes) -> None:
    frame = parse_mp3_header(header)
    assert frame is None or frame.length > 4


@given(st.binary(max_size=600))
def test_mp3_reader_never_raises(data: bytes) -> None:
    result = mp3_of(mp3_frame(MPEG1_128K_44100, 417) + data)
    assert result is None or result >= 0
