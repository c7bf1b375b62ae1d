"""The fake AMI server speaks the protocol like Asterisk does (raw TCP client, no connector code)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from connector.demo.ami_server import AmiUser, encode_frame, parse_mask
from tests.ami.conftest import SECRET, USER
from tests.doubles.ami_server import (
    CDR_STATUS_SUSPENDED,
    FakeAmiServer,
    synthetic_cdrs,
    transcript_events,
    transcript_frames,
)
from tests.paths import AMI_FIXTURES


class RawClient:
    """A bare AMI client: send actions, read frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def frame(self) -> dict[str, str]:
        data = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = data.decode().split("\r\n")
        return dict(line.split(": ", 1) for line in lines if line)

    async def act(self, **fields: str) -> dict[str, str]:
        self.writer.write(encode_frame(fields.items()))
        return await self.frame()

    async def login(self, username: str = USER, secret: str = SECRET, events: str = "on") -> dict[str, str]:
        return await self.act(Action="Login", Username=username, Secret=secret, Events=events)


@pytest.fixture
async def raw(server: FakeAmiServer) -> AsyncIterator[RawClient]:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    client = RawClient(reader, writer)
    assert await reader.readline() == b"Asterisk Call Manager/11.0.0\r\n"
    yield client
    writer.close()


async def test_events_only_after_login(server: FakeAmiServer, raw: RawClient) -> None:
    cdr = next(synthetic_cdrs(1))
    assert server.send_event(cdr) == 0
    denied = await raw.act(Action="Ping", ActionID="1")
    assert denied == {"Response": "Error", "ActionID": "1", "Message": "Permission denied"}
    accepted = await raw.login()
    assert accepted["Message"] == "Authentication accepted"
    assert (await raw.frame())["Event"] == "FullyBooted"
    assert server.send_event(cdr) == 1
    assert (await raw.frame())["Event"] == "Cdr"


async def test_a_wrong_secret_is_refused_and_the_connection_closed(
    server: FakeAmiServer, raw: RawClient
) -> None:
    refused = await raw.login(secret="wrong")
    assert refused == {"Response": "Error", "Message": "Authentication failed"}
    assert await raw.reader.read() == b""
    assert server.login_failures == 1


async def test_ping_command_and_logoff(server: FakeAmiServer, raw: RawClient) -> None:
    await raw.login(events="off")
    pong = await raw.act(Action="Ping", ActionID="p")
    assert pong["Ping"] == "Pong"
    version = await raw.act(Action="Command", Command="core show version")
    assert version["Output"].startswith("Asterisk 22")
    unknown = await raw.act(Action="Command", Command="no such thing")
    assert unknown["Response"] == "Error"
    goodbye = await raw.act(Action="Logoff")
    assert goodbye == {"Response": "Goodbye", "Message": "Thanks for all the fish."}
    assert await raw.reader.read() == b""


async def test_cdr_show_status_is_configurable(server: FakeAmiServer, raw: RawClient) -> None:
    await raw.login(events="off")
    server.commands["cdr show status"] = CDR_STATUS_SUSPENDED
    raw.writer.write(encode_frame([("Action", "Command"), ("Command", "cdr show status")]))
    data = await raw.reader.readuntil(b"\r\n\r\n")
    assert b"Output:     cdr_manager (suspended)\r\n" in data


async def test_read_classes_and_event_masks_filter_events() -> None:
    users = {"nocdr": AmiUser("pw", frozenset({"system", "call"})), "all": AmiUser("pw")}
    async with FakeAmiServer(users) as server:
        clients = []
        for username, events in (("nocdr", "on"), ("all", "system"), ("all", "cdr,system")):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            client = RawClient(reader, writer)
            await reader.readline()
            await client.login(username, "pw", events)
            clients.append(client)
        assert server.send_event(next(synthetic_cdrs(1))) == 1
        for client in clients:
            client.writer.close()


async def test_masks() -> None:
    assert parse_mask("on") == {"all"}
    assert parse_mask(None) == {"all"}
    assert parse_mask("off") == frozenset()
    assert parse_mask("cdr, system") == {"cdr", "system"}


async def test_transcripts_split_into_their_frames() -> None:
    for path in AMI_FIXTURES.glob("*.txt"):
        if path.name.endswith(".annotated.txt"):
            continue
        data = path.read_bytes()
        frames = transcript_frames(data)
        assert b"".join(frames) == data.partition(b"\r\n")[2]
        cdrs = [f for f in transcript_events(path) if f.startswith(b"Event: Cdr\r\n")]
        assert len(cdrs) == data.count(b"\r\nEvent: Cdr\r\n"), path.name


async def test_synthetic_cdrs_are_distinct_and_well_formed() -> None:
    frames = list(synthetic_cdrs(50))
    assert len(set(frames)) == 50
    for frame in frames:
        assert frame.endswith(b"UserField: \r\nLinkedID: " + frame.split(b"LinkedID: ")[1])
        assert frame.count(b"\r\n\r\n") == 1
    assert any("José".encode() in frame for frame in frames)


async def test_go_down_and_come_back_on_the_same_port(tmp_path: Path) -> None:
    async with FakeAmiServer() as server:
        port = server.port
        await server.go_down()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        await server.start()
        assert server.port == port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"Asterisk Call Manager/")
        writer.close()
