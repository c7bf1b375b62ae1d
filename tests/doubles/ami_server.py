"""The fake AMI server of the tests: the demo's server plus what only tests and benchmarks use.

On top of connector/demo/ami_server.py it answers Command (`core show version`, `cdr show status`,
`manager show user NAME`, configurable) and Events, replays the events of recorded transcripts,
sends arbitrary bytes, floods synthetic Cdr events, can stop answering Pings (a half-open link),
delays refused logins, and goes down and comes back on the same port. It counts connections and
Pings, and keeps each session's actions.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from connector.demo import ami_server
from connector.demo.ami_server import BANNER, FRAME_END, AmiUser, ServerSession, encode_frame, parse_mask

CORE_VERSION = ("Asterisk 22.10.1 built by root @ vm on a x86_64 running Linux on 2026-11-26 23:15:04 UTC",)
_CDR_STATUS_HEAD = (
    "",
    "Call Detail Record (CDR) settings",
    "----------------------------------",
    "  Logging:                    Enabled",
    "  Mode:                       Simple",
    "  Log calls by default:       Yes",
    "  Log unanswered calls:       Yes",
    "  Log congestion:             Yes",
    "",
    "  Ignore bridging changes:    No",
    "",
    "  Ignore dial state changes:  No",
    "",
    "  Cancel disposition enabled: No",
    "",
    "* Registered Backends",
    "  -------------------",
)
CDR_STATUS_ENABLED = (*_CDR_STATUS_HEAD, "    cdr_manager", "")
CDR_STATUS_SUSPENDED = (*_CDR_STATUS_HEAD, "    cdr_manager (suspended)", "")


def transcript_frames(data: bytes) -> list[bytes]:
    """Split what an AMI client received (banner first) into frames, each with its end."""
    _, _, body = data.partition(b"\r\n")
    return [frame + FRAME_END for frame in body.split(FRAME_END) if frame.strip()]


def transcript_events(path: Path) -> list[bytes]:
    """Return the event frames of a recorded transcript (responses to its client dropped)."""
    return [f for f in transcript_frames(path.read_bytes()) if f.startswith(b"Event: ")]


_CDR_TEMPLATE = (
    "Event: Cdr\r\nPrivilege: cdr,all\r\nAccountCode: \r\nSource: {src}\r\n"
    "Destination: {dst}\r\nDestinationContext: from-internal\r\nCallerID: {cid}\r\n"
    "Channel: PJSIP/{src}-{seq:08x}\r\nDestinationChannel: PJSIP/{dst}-{seq2:08x}\r\n"
    "LastApplication: Dial\r\nLastData: PJSIP/{dst},30\r\nStartTime: {start}\r\n"
    "AnswerTime: {answer}\r\nEndTime: {end}\r\nDuration: {duration}\r\n"
    "BillableSeconds: {billsec}\r\nDisposition: {disposition}\r\nAMAFlags: DOCUMENTATION\r\n"
    "UniqueID: {uniqueid}\r\nUserField: \r\n"
)
_NAMES = ('"Alice" <{src}>', '"José Müller" <{src}>', '"O\'Brien, Pat" <{src}>', "<{src}>")
_DISPOSITIONS = ("ANSWERED", "ANSWERED", "ANSWERED", "NO ANSWER", "BUSY")


def synthetic_cdr(index: int, *, epoch: int = 1_795_700_000, linkedid: bool = True) -> bytes:
    """Build the index-th synthetic Cdr frame: distinct, realistic, some non-ASCII caller names."""
    src = f"{1000 + index % 900}"
    disposition = _DISPOSITIONS[index % len(_DISPOSITIONS)]
    begin = epoch + index // 4
    duration = 5 + index % 300
    billsec = duration - 3 if disposition == "ANSWERED" else 0
    frame = _CDR_TEMPLATE.format(
        src=src,
        dst=f"{200 + index % 50}",
        cid=_NAMES[index % len(_NAMES)].format(src=src),
        seq=index,
        seq2=index + 1,
        start=_local(begin),
        answer=_local(begin + 3) if billsec else "",
        end=_local(begin + duration),
        duration=duration,
        billsec=billsec,
        disposition=disposition,
        uniqueid=f"{epoch}.{index}",
    )
    if linkedid:
        frame += f"LinkedID: {epoch}.{index - index % 2}\r\nSequence: {index}\r\n"
    return frame.encode() + b"\r\n"


def synthetic_cdrs(count: int, start: int = 0, *, linkedid: bool = True) -> Iterator[bytes]:
    """Yield `count` synthetic Cdr frames numbered from `start`."""
    for index in range(start, start + count):
        yield synthetic_cdr(index, linkedid=linkedid)


def _local(epoch_s: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch_s))


@dataclass
class RecordedSession(ServerSession):
    """A session that keeps every action its client sent."""

    actions: list[dict[str, str]] = field(default_factory=list)


class FakeAmiServer(ami_server.FakeAmiServer):
    """The demo's AMI server with the tests' switches, commands, replays and floods."""

    def __init__(
        self,
        users: Mapping[str, AmiUser] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        banner: str = BANNER,
        commands: Mapping[str, Sequence[str]] | None = None,
        refuse_delay_s: float = 0.0,
        answer_pings: bool = True,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(users, host=host, port=port, banner=banner, tls=tls)
        self.commands: dict[str, Sequence[str]] = {
            "core show version": CORE_VERSION,
            "cdr show status": CDR_STATUS_ENABLED,
            **(commands or {}),
        }
        self.refuse_delay_s = refuse_delay_s
        self.answer_pings = answer_pings
        self.connections = self.pings = 0

    async def start(self) -> FakeAmiServer:
        """Listen (again, on the same port after go_down())."""
        await super().start()
        return self

    go_down = ami_server.FakeAmiServer.stop

    async def __aenter__(self) -> FakeAmiServer:
        return await self.start()

    async def wait_for_attempts(self, count: int) -> None:
        """Wait until `count` Login actions (accepted or refused) were answered."""
        async with self._login_changed:
            await self._login_changed.wait_for(lambda: self.logins + self.login_failures >= count)

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are to every logged-in session (no framing, no filtering)."""
        for session in self.logged_in:
            session.write(data)

    async def replay(self, frames: Iterable[bytes]) -> int:
        """Send recorded event frames in order; return how many were sent to someone."""
        sent = sum(1 for frame in frames if self.send_event(frame))
        await self.drain()
        return sent

    async def send_chunks(self, chunks: Iterable[bytes]) -> None:
        """Write pre-built byte chunks to every logged-in session, waiting for flow control."""
        for chunk in chunks:
            self.send_raw(chunk)
            await self.drain()

    async def send_cdrs(self, count: int, start: int = 0, *, chunk: int = 500, linkedid: bool = True) -> None:
        """Flood `count` synthetic Cdr frames (sent to sessions allowed to read `cdr`)."""
        for first in range(start, start + count, chunk):
            size = min(chunk, start + count - first)
            data = b"".join(synthetic_cdrs(size, first, linkedid=linkedid))
            for session in self.logged_in:
                if session.wants(frozenset({"cdr"})):
                    session.write(data)
            await self.drain()

    def _new_session(self, writer: asyncio.StreamWriter) -> RecordedSession:
        self.connections += 1
        return RecordedSession(writer)

    async def _act(self, session: ServerSession, action: dict[str, str]) -> None:
        assert isinstance(session, RecordedSession)
        session.actions.append(action)
        await super()._act(session, action)

    async def _logged_in_action(
        self, session: ServerSession, name: str, action: dict[str, str], reply: list[tuple[str, str]]
    ) -> None:
        if name == "command":
            session.write(self._command(action.get("command", ""), reply))
        elif name == "events":
            session.mask = self._allowed(session, parse_mask(action.get("eventmask")))
            state = ("Events", "On" if session.mask else "Off")
            session.write(encode_frame([("Response", "Success"), *reply, state]))
        else:
            await super()._logged_in_action(session, name, action, reply)

    def _pong(self, session: ServerSession, reply: list[tuple[str, str]]) -> None:
        if self.answer_pings:
            self.pings += 1
            super()._pong(session, reply)

    async def _refuse(self, session: ServerSession, reply: list[tuple[str, str]]) -> None:
        await asyncio.sleep(self.refuse_delay_s)  # Asterisk also delays the refusal
        await super()._refuse(session, reply)

    def _command(self, command: str, reply: list[tuple[str, str]]) -> bytes:
        output = self.commands.get(command.strip()) or self._show_user(command.strip())
        if output is None:
            missing = f"No such command '{command}' (type 'core show help' for other commands)"
            return encode_frame([("Response", "Error"), *reply, _FOLLOWS, ("Output", missing)])
        lines = [("Output", line) for line in output]
        return encode_frame([("Response", "Success"), *reply, _FOLLOWS, *lines])

    def _show_user(self, command: str) -> Sequence[str] | None:
        """Answer `manager show user NAME` from the users table, as Asterisk 22 prints it."""
        if not command.startswith("manager show user "):
            return None
        name = command.removeprefix("manager show user ").strip()
        user = self.users.get(name)
        if user is None:
            return (f"There is no manager called {name}",)
        return (
            "",
            f"          username: {name}",
            "            secret: <Set>",
            "               ACL: no",
            f"         read perm: {','.join(sorted(user.read))}",
            "        write perm: system,call,agent,user,command,reporting,originate",
            "   displayconnects: yes",
            "allowmultiplelogin: yes",
            "         Variables: ",
        )


_FOLLOWS = ("Message", "Command output follows")
