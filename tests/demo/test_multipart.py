"""The receiver's streaming multipart parser, fed in chunks of every size."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.demo import multipart
from connector.demo.multipart import MultipartError, Part, boundary_of, parse_multipart, parse_part_headers

BOUNDARY = b"b0undary"


class Collect:
    """Sinks that keep each part's headers, content and how many writes it took."""

    def __init__(self) -> None:
        self.parts: list[tuple[Part, bytearray]] = []
        self.closed = 0

    def open_part(self, part: Part) -> Collect:
        self.parts.append((part, bytearray()))
        return self

    def write(self, data: bytes) -> None:
        self.parts[-1][1].extend(data)

    def close(self) -> None:
        self.closed += 1


def reader(body: bytes, sizes: list[int] | None = None) -> Callable[[int], bytes]:
    """A read(n) over `body` that returns pieces of the given sizes (cycling), never more than n."""
    position = 0
    turn = 0

    def read(limit: int) -> bytes:
        nonlocal position, turn
        size = limit if not sizes else max(1, min(limit, sizes[turn % len(sizes)]))
        turn += 1
        piece = body[position : position + size]
        position += len(piece)
        return piece

    return read


def encode(parts: list[tuple[str, str | None, bytes]], boundary: bytes = BOUNDARY) -> bytes:
    """Build a body the way clients do."""
    out = b""
    for name, filename, content in parts:
        out += b"--" + boundary + b"\r\n"
        out += f'Content-Disposition: form-data; name="{name}"'.encode()
        if filename is not None:
            out += f'; filename="{filename}"\r\nContent-Type: audio/wav'.encode()
        out += b"\r\n\r\n" + content + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def test_fields_and_file() -> None:
    body = encode([("recording_id", None, b"r1"), ("audio", "a.wav", b"RIFF\r\n--b0und\r\n")])
    collect = Collect()
    assert parse_multipart(reader(body), BOUNDARY, collect.open_part) == 2
    (first, first_data), (second, second_data) = collect.parts
    assert (first.name, first.filename, bytes(first_data)) == ("recording_id", None, b"r1")
    assert (second.name, second.filename, second.content_type) == ("audio", "a.wav", "audio/wav")
    assert bytes(second_data) == b"RIFF\r\n--b0und\r\n"  # a near-delimiter stays content
    assert collect.closed == 2


def test_preamble_epilogue_padding_and_empty_content() -> None:
    body = (
        b"preamble text\r\n--b0undary  \t\r\nContent-Disposition: form-data; name=a\r\n\r\n"
        b'\r\n--b0undary\r\ncontent-disposition: form-data; name="b"\r\n\r\nx\r\n'
        b"--b0undary--\r\nepilogue"
    )
    collect = Collect()
    assert parse_multipart(reader(body), BOUNDARY, collect.open_part) == 2
    assert [(p.name, bytes(d)) for p, d in collect.parts] == [("a", b""), ("b", b"x")]


@settings(max_examples=200)
@given(
    contents=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    sizes=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=5),
)
def test_any_content_in_any_chunking(contents: list[bytes], sizes: list[int]) -> None:
    parts = [(f"f{i}", "x.wav" if i % 2 else None, content) for i, content in enumerate(contents)]
    collect = Collect()
    parse_multipart(reader(encode(parts), sizes), BOUNDARY, collect.open_part)
    assert [bytes(data) for _, data in collect.parts] == contents


def test_large_part_goes_to_the_sink_in_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multipart, "CHUNK_BYTES", 1024)
    writes: list[int] = []

    class Sizes:
        def write(self, data: bytes) -> None:
            writes.append(len(data))

        def close(self) -> None:
            pass

    body = encode([("audio", "a.wav", b"\x00" * 100_000)])
    parse_multipart(reader(body), BOUNDARY, lambda part: Sizes())
    assert sum(writes) == 100_000
    assert max(writes) <= 1024 + len(BOUNDARY) + 4


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "no multipart boundary"),
        (b"--other\r\n", "no multipart boundary"),
        (b"--b0undary\r\nContent-Disposition: form-data; name=a\r\n\r\nabc", "middle of a part"),
        (b"--b0undary\r\nContent-Disposition: form-data; name=a\r\n", "part headers"),
        (b"--b0undary\r\nContent-Type: text/plain\r\n\r\nx\r\n--b0undary--", "Content-Dispo"),
        (b"--b0undary\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b0undary--", "name"),
        (b"--b0undary\r\nno colon here\r\n\r\nx\r\n--b0undary--", "bad part header"),
        (b"--b0undaryX\r\n\r\n", "line break"),
        (b"--b0undary", "middle of a part"),
    ],
)
def test_malformed_bodies(body: bytes, problem: str) -> None:
    with pytest.raises(MultipartError, match=problem):
        parse_multipart(reader(body), BOUNDARY, Collect().open_part)


def test_too_many_parts_and_huge_headers() -> None:
    many = encode([(f"f{i}", None, b"") for i in range(multipart.MAX_PARTS + 1)])
    with pytest.raises(MultipartError, match="parts"):
        parse_multipart(reader(many), BOUNDARY, Collect().open_part)
    huge = b"--b0undary\r\nX: " + b"y" * (multipart.MAX_HEADER_BYTES + 10) + b"\r\n\r\n"
    with pytest.raises(MultipartError, match="too long"):
        parse_multipart(reader(huge), BOUNDARY, Collect().open_part)


@pytest.mark.parametrize(
    ("header", "boundary"),
    [
        ("multipart/form-data; boundary=abc", b"abc"),
        ('Multipart/Form-Data; charset=utf-8; boundary="a b:c"', b"a b:c"),
    ],
)
def test_boundary_of(header: str, boundary: bytes) -> None:
    assert boundary_of(header) == boundary


@pytest.mark.parametrize("header", ["application/json", "multipart/form-data", ""])
def test_boundary_of_refuses(header: str) -> None:
    with pytest.raises(MultipartError):
        boundary_of(header)


def test_part_header_parameters() -> None:
    part = parse_part_headers(
        b'Content-Disposition: form-data; name="audio"; filename="a \\"q\\" ;b.wav"\r\n'
        b"Content-Type: audio/mpeg"
    )
    assert (part.name, part.filename, part.content_type) == ("audio", 'a "q" ;b.wav', "audio/mpeg")
