"""The reading side of AmiProtocol: each data-losing panoramisk defect (README, "Input robustness"), fixed.

The frames are fed straight into data_received (as the event loop does after each TCP read), so
the split points are exact; tests/ami/test_ami_client.py covers the same over real sockets.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from panoramisk import actions
from panoramisk.ami_protocol import AMIProtocol as PanoramiskProtocol

from connector.ami.protocol import AmiProtocol, parse_headers
from connector.ami.session import command_output
from connector.outbox.records import Headers
from tests.ami.conftest import Delta

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
JOSE_CDR = (
    'Event: Cdr\r\nPrivilege: cdr,all\r\nCallerID: "José Müller" <1001>\r\n'
    "LastData: \r\nUniqueID: 1795735234.69\r\nUserField: \r\n\r\n"
).encode()
JOSE_HEADERS: Headers = (
    ("Event", "Cdr"),
    ("Privilege", "cdr,all"),
    ("CallerID", '"José Müller" <1001>'),
    ("LastData", ""),
    ("UniqueID", "1795735234.69"),
    ("UserField", ""),
)
MALFORMED = "ami_frames_malformed_total"
CALLBACK_ERRORS = "ami_callback_errors_total"


class FakeTransport(asyncio.Transport):
    """Records what the protocol writes and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.aborted = False

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def is_closing(self) -> bool:
        return self.closing


def cdr(uniqueid: str, *extra: str) -> bytes:
    """A small Cdr frame."""
    lines = ["Event: Cdr", "Privilege: cdr,all", *extra, f"UniqueID: {uniqueid}", "UserField: "]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(**options: Any) -> tuple[AmiProtocol, list[Headers], FakeTransport]:
    """A protocol on a fake transport, with its received Cdr headers."""
    received: list[Headers] = []
    protocol = AmiProtocol(received.append, **options)
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, received, transport


def uniqueids(received: list[Headers]) -> list[str]:
    return [dict(headers)["UniqueID"] for headers in received]


async def test_frame_split_at_every_byte_offset_keeps_every_byte() -> None:
    stream = BANNER + JOSE_CDR + cdr("2")
    for offset in range(1, len(stream)):
        protocol, received, _ = connect()
        protocol.data_received(stream[:offset])
        protocol.data_received(stream[offset:])
        assert received == [JOSE_HEADERS, parse_headers(cdr("2")[:-4])[0]], offset
        assert protocol.banner == "Asterisk Call Manager/11.0.0"


async def test_frames_fed_one_byte_at_a_time() -> None:
    protocol, received, _ = connect()
    for byte in BANNER + JOSE_CDR * 3:
        protocol.data_received(bytes([byte]))
    assert received == [JOSE_HEADERS] * 3


async def test_panoramisk_alone_loses_what_we_keep() -> None:
    """Why the layer exists: the same input through panoramisk 1.4 loses data."""

    class Factory:
        def __init__(self) -> None:
            self.events: list[Any] = []

        def dispatch(self, message: Any) -> None:
            self.events.append(message)

    plain = PanoramiskProtocol()
    plain.connection_made(FakeTransport())
    plain.factory = factory = Factory()
    plain.encoding = "utf-8"
    split = JOSE_CDR.index("é".encode()) + 1  # between the two bytes of é
    plain.data_received(BANNER + JOSE_CDR[:split])
    plain.data_received(JOSE_CDR[split:])
    (event,) = factory.events
    assert event["CallerID"] == '"Jos Müller" <1001>'  # é dropped
    assert "UserField" not in event  # trailing empty header dropped

    ours, received, _ = connect()
    ours.data_received(BANNER + JOSE_CDR[:split])
    ours.data_received(JOSE_CDR[split:])
    assert received == [JOSE_HEADERS]


async def test_headers_keep_order_duplicates_and_exact_values() -> None:
    frame = (
        b"Event: Cdr\r\nZeta: 1\r\nAlpha: a: b\r\nEmpty: \r\nNoSpace:x\r\nBare:\r\n"
        b"Dup: 1\r\nDup: 2\r\nTrail:  two spaces  \r\nUserField: \r\n\r\n"
    )
    protocol, received, _ = connect()
    protocol.data_received(BANNER + frame)
    assert received == [
        (
            ("Event", "Cdr"),
            ("Zeta", "1"),
            ("Alpha", "a: b"),
            ("Empty", ""),
            ("NoSpace", "x"),
            ("Bare", ""),
            ("Dup", "1"),
            ("Dup", "2"),
            ("Trail", " two spaces  "),
            ("UserField", ""),
        )
    ]


async def test_a_raising_callback_loses_nothing_else_and_keeps_the_connection() -> None:
    delta = Delta(CALLBACK_ERRORS)
    calls: list[str] = []

    def on_cdr(headers: Headers) -> None:
        calls.append(dict(headers)["UniqueID"])
        if len(calls) == 1:
            raise RuntimeError("boom")

    protocol = AmiProtocol(on_cdr)
    transport = FakeTransport()
    protocol.connection_made(transport)
    protocol.data_received(BANNER + cdr("1") + cdr("2") + cdr("3"))
    assert calls == ["1", "2", "3"]
    assert not transport.is_closing()
    assert delta[CALLBACK_ERRORS] == 1


async def test_panoramisk_alone_lets_a_callback_error_escape() -> None:
    class Factory:
        def dispatch(self, message: Any) -> None:
            raise RuntimeError("boom")

    plain = PanoramiskProtocol()
    plain.connection_made(FakeTransport())
    plain.factory = Factory()
    # asyncio closes the connection when data_received raises: the rest of the read is lost.
    with pytest.raises(RuntimeError):
        plain.data_received(BANNER + cdr("1") + cdr("2"))


async def test_bad_input_is_counted_and_the_frames_around_it_survive() -> None:
    delta = Delta(MALFORMED)
    flood = b"".join(
        f"Event: Newexten\r\nPrivilege: dialplan,all\r\nChannel: PJSIP/{i}\r\n\r\n".encode()
        for i in range(1000)
    )
    ten_kb = "x" * 10_000
    stream = b"".join(
        [
            BANNER,
            cdr("1"),
            b"this frame has no colon at all\r\nnor here\r\n\r\n",
            cdr("2", "LastData: " + "y" * 70_000, "Source: 1001"),
            b'Event: Cdr\r\nCallerID: "Bad \xff\xc3 byte" <1>\r\nUniqueID: 3\r\n\r\n',
            b"Event: Cdr\r\nUniqueID: 4\r\n\r\n",
            cdr("5", f"UserField: {ten_kb}"),
            flood,
            cdr("6"),
        ]
    )
    protocol, received, transport = connect()
    for start in range(0, len(stream), 1400):  # TCP-sized reads
        protocol.data_received(stream[start : start + 1400])
    assert uniqueids(received) == ["1", "2", "3", "4", "5", "6"]
    by_id = {dict(h)["UniqueID"]: h for h in received}
    assert ("Source", "1001") in by_id["2"]
    assert all(key != "LastData" for key, _ in by_id["2"])  # the 70 KB line only
    assert ("CallerID", '"Bad \ufffd\ufffd byte" <1>') in by_id["3"]
    assert by_id["4"] == (("Event", "Cdr"), ("UniqueID", "4"))
    assert ("UserField", ten_kb) in by_id["5"]
    assert delta[MALFORMED] == 3  # no colon, overlong line, invalid UTF-8
    assert not transport.is_closing()


async def test_an_endless_frame_is_discarded_and_reading_resynchronises() -> None:
    delta = Delta(MALFORMED)
    protocol, received, _ = connect(max_frame_bytes=4096)
    protocol.data_received(BANNER + cdr("1"))
    for _ in range(10):
        protocol.data_received(b"Event: Junk\r\nData: " + b"z" * 1000)
    protocol.data_received(b"\r\n\r\n" + cdr("2"))
    assert uniqueids(received) == ["1", "2"]
    assert delta[MALFORMED] == 1


async def test_blank_lines_between_frames_are_tolerated() -> None:
    delta = Delta(MALFORMED)
    protocol, received, _ = connect()
    protocol.data_received(BANNER + cdr("1") + b"\r\n\r\n\r\n" + cdr("2"))
    assert uniqueids(received) == ["1", "2"]
    assert delta[MALFORMED] == 0


async def test_unrelated_events_are_not_parsed() -> None:
    protocol, received, _ = connect()
    protocol.data_received(BANNER + b"Event: Newexten\r\nBroken line\r\n\r\n" + cdr("1"))
    assert uniqueids(received) == ["1"]
    assert protocol.events_received == 2


async def test_shutdown_closes_after_the_frames_of_the_same_read() -> None:
    protocol, received, transport = connect()
    shutdown = b"Event: Shutdown\r\nPrivilege: system,all\r\nShutdown: Cleanly\r\nRestart: True\r\n\r\n"
    protocol.data_received(BANNER + cdr("1") + shutdown + cdr("2"))
    assert uniqueids(received) == ["1", "2"]
    assert transport.is_closing()
    assert "Asterisk shut down" in protocol.close_reason
    assert "Restart: True" in protocol.close_reason


async def test_connection_lost_fails_pending_actions_and_counts_a_cut_frame() -> None:
    delta = Delta(MALFORMED)
    protocol, _, _ = connect()
    future = protocol.send(actions.Action({"Action": "Ping"}))
    protocol.data_received(BANNER + b"Event: Cdr\r\nUniqueID: 1\r\n")
    protocol.connection_lost(None)
    with pytest.raises(ConnectionError):
        await future
    assert protocol.lost.done()
    assert delta[MALFORMED] == 1


async def test_responses_resolve_actions_with_ordered_output_lines() -> None:
    protocol, _, transport = connect()
    action = actions.Action({"Action": "Command", "Command": "cdr show status"})
    future = protocol.send(action)
    assert b"Action: Command\r\n" in transport.written
    response = (
        f"Response: Success\r\nActionID: {action.id}\r\nMessage: Command output follows\r\n"
        "Output: \r\nOutput: Call Detail Record (CDR) settings\r\nOutput:     cdr_manager\r\n"
        "Output: \r\n\r\n"
    ).encode()
    protocol.data_received(BANNER + response)
    message = await future
    assert message.success
    assert command_output(message) == ["", "Call Detail Record (CDR) settings", "    cdr_manager", ""]


async def test_an_unexpected_banner_is_accepted_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    protocol, received, _ = connect()
    protocol.data_received(b"SSH-2.0-OpenSSH\r\n" + cdr("1"))
    assert uniqueids(received) == ["1"]
    assert "unexpected AMI banner" in caplog.text


async def test_frames_in_unusual_shape_are_still_routed() -> None:
    delta = Delta(MALFORMED)
    protocol, received, _ = connect()
    protocol.data_received(
        BANNER
        + b"event: Cdr\r\nUniqueID: 1\r\n\r\n"  # lower-case key: still a Cdr
        + b"Foo: bar\r\nno colon\r\n\r\n"  # neither event nor response, with a bad line
        + b"ActionID: x\r\nResponse: Success\r\n\r\n"  # a response to nothing we sent
        + cdr("2")
    )
    assert uniqueids(received) == ["1", "2"]
    assert delta[MALFORMED] == 1
