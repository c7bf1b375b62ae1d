"""A fake Asterisk Manager Interface server speaking the real protocol over TCP.

It behaves like Asterisk 22 on the points the connector depends on: the banner line, Login
(accepted, or `Authentication failed` then the connection is closed), events only after login and
only of the classes both the user's `read=` and the login's `Events:` mask allow, Ping, Logoff,
Events and Command (`core show version`, `cdr show status`, configurable). It can replay the
events of recorded transcripts, send arbitrary bytes, flood synthetic Cdr events, stop answering
Pings (a half-open link), drop its clients, and go down and come back on the same port.

Used by the tests, the ingest benchmark and `connector demo`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

BANNER = "Asterisk Call Manager/11.0.0"
FRAME_END = b"\r\n\r\n"
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
TRUE_WORDS = frozenset({"on", "yes", "true", "y", "1"})
FALSE_WORDS = frozenset({"off", "no", "false", "n", "0"})


def encode_frame(headers: Iterable[tuple[str, str]]) -> bytes:
    """Encode headers as one AMI frame (`Key: Value` lines and an empty line)."""
    return "".join(f"{key}: {value}\r\n" for key, value in headers).encode() + b"\r\n"


def parse_action(frame: bytes) -> dict[str, str]:
    """Parse a client's action frame into a dict with lower-case keys (first value wins)."""
    fields: dict[str, str] = {}
    for line in frame.decode("utf-8", "replace").split("\r\n"):
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    return fields


def transcript_frames(data: bytes) -> list[bytes]:
    """Split what an AMI client received (banner first) into frames, each with its end."""
    _, _, body = data.partition(b"\r\n")
    return [frame + FRAME_END for frame in body.split(FRAME_END) if frame.strip()]


def transcript_events(path: Path) -> list[bytes]:
    """Return the event frames of a recorded transcript (responses to its client dropped)."""
    return [f for f in transcript_frames(path.read_bytes()) if f.startswith(b"Event: ")]


def event_classes(frame: bytes) -> frozenset[str]:
    """Return an event's classes from its Privilege header (`cdr,all` → {'cdr'})."""
    start = frame.find(b"\r\nPrivilege: ")
    if start < 0:
        return frozenset()
    end = frame.find(b"\r\n", start + 2)
    value = frame[start + 13 : end].decode("ascii", "replace")
    return frozenset(c.strip().lower() for c in value.split(",") if c.strip()) - {"all"}


def parse_mask(value: str | None) -> frozenset[str]:
    """Parse a Login/Events mask: on → everything, off → nothing, else a class list."""
    text = (value if value is not None else "on").strip().lower()
    if text in TRUE_WORDS:
        return frozenset({"all"})
    if text in FALSE_WORDS:
        return frozenset()
    return frozenset(c.strip() for c in text.split(",") if c.strip())


def intersect_classes(read: frozenset[str], requested: frozenset[str]) -> frozenset[str]:
    """Combine a user's read classes with a requested mask; `all` matches every class."""
    if "all" in read:
        return requested
    if "all" in requested:
        return read
    return read & requested


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


@dataclass(frozen=True)
class AmiUser:
    """A manager.conf user: its secret and `read=` classes."""

    secret: str
    read: frozenset[str] = frozenset({"all"})


@dataclass
class ServerSession:
    """One client connection as the server sees it."""

    writer: asyncio.StreamWriter
    username: str | None = None
    mask: frozenset[str] = frozenset()
    actions: list[dict[str, str]] = field(default_factory=list)

    @property
    def logged_in(self) -> bool:
        """True after a successful Login."""
        return self.username is not None

    def wants(self, classes: frozenset[str]) -> bool:
        """True if an event of these classes reaches this session."""
        if not self.mask:
            return False
        return "all" in self.mask or not classes or bool(classes & self.mask)

    def write(self, data: bytes) -> None:
        """Write bytes unless the connection is closing."""
        if not self.writer.is_closing():
            self.writer.write(data)


class FakeAmiServer:
    """An AMI server on 127.0.0.1 (port 0 = any free port) for tests, benchmarks and demos."""

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
    ) -> None:
        self.users = dict(users) if users is not None else {"connector": AmiUser("secret")}
        self.host, self._port = host, port
        self.banner = banner
        self.commands: dict[str, Sequence[str]] = {
            "core show version": CORE_VERSION,
            "cdr show status": CDR_STATUS_ENABLED,
            **(commands or {}),
        }
        self.refuse_delay_s = refuse_delay_s
        self.answer_pings = answer_pings
        self.sessions: list[ServerSession] = []
        self.connections = self.logins = self.login_failures = self.pings = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._login_changed = asyncio.Condition()

    @property
    def port(self) -> int:
        """The listening port (known after start())."""
        return self._port

    @property
    def logged_in(self) -> list[ServerSession]:
        """The sessions that passed Login."""
        return [s for s in self.sessions if s.logged_in]

    async def start(self) -> FakeAmiServer:
        """Listen (again, on the same port after go_down())."""
        self._server = await asyncio.start_server(self._handle, self.host, self._port, limit=1 << 20)
        self._port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and drop every client."""
        self.drop_connections()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        # Let every connection handler finish, so none is left to be cancelled by a closing loop.
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=5)

    go_down = stop

    async def __aenter__(self) -> FakeAmiServer:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def drop_connections(self) -> None:
        """Abort every client connection (as a crash or a network cut would)."""
        for session in self.sessions:
            session.writer.transport.abort()

    async def wait_for_logins(self, count: int = 1) -> ServerSession:
        """Wait until `count` successful logins happened in total; return the latest session."""
        async with self._login_changed:
            await self._login_changed.wait_for(lambda: self.logins >= count and self.logged_in)
        return self.logged_in[-1]

    async def wait_for_attempts(self, count: int) -> None:
        """Wait until `count` Login actions (accepted or refused) were answered."""
        async with self._login_changed:
            await self._login_changed.wait_for(lambda: self.logins + self.login_failures >= count)

    def send_event(self, frame: bytes) -> int:
        """Send one event frame to each logged-in session allowed to see it; return how many."""
        classes = event_classes(frame)
        targets = [s for s in self.logged_in if s.wants(classes)]
        for session in targets:
            session.write(frame)
        return len(targets)

    def send_raw(self, data: bytes) -> None:
        """Send bytes as they are to every logged-in session (no framing, no filtering)."""
        for session in self.logged_in:
            session.write(data)

    async def drain(self) -> None:
        """Wait until written bytes are handed to the kernel (or the connections are gone)."""
        for session in self.logged_in:
            with contextlib.suppress(ConnectionError):
                await session.writer.drain()

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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ServerSession(writer)
        self.sessions.append(session)
        self.connections += 1
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            session.write(self.banner.encode() + b"\r\n")
            while not writer.is_closing():
                frame = await reader.readuntil(FRAME_END)
                await self._act(session, parse_action(frame))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            self.sessions.remove(session)
            writer.close()
            if handler is not None:
                self._handlers.discard(handler)

    async def _act(self, session: ServerSession, action: dict[str, str]) -> None:
        session.actions.append(action)
        name = action.get("action", "").lower()
        reply = [("ActionID", action["actionid"])] if "actionid" in action else []
        if name == "login":
            await self._login(session, action, reply)
        elif not session.logged_in:
            session.write(encode_frame([("Response", "Error"), *reply, _DENIED]))
        elif name == "ping":
            if self.answer_pings:
                self.pings += 1
                pong = [("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")]
                session.write(encode_frame([("Response", "Success"), *reply, *pong]))
        elif name == "logoff":
            bye = ("Message", "Thanks for all the fish.")
            session.write(encode_frame([("Response", "Goodbye"), *reply, bye]))
            session.writer.close()
        elif name == "command":
            session.write(self._command(action.get("command", ""), reply))
        elif name == "events":
            session.mask = self._allowed(session, parse_mask(action.get("eventmask")))
            state = ("Events", "On" if session.mask else "Off")
            session.write(encode_frame([("Response", "Success"), *reply, state]))
        else:
            text = f"Invalid/unknown command: {action.get('action', '')}. Use Action: ListCommands"
            session.write(encode_frame([("Response", "Error"), *reply, ("Message", text)]))

    async def _login(
        self, session: ServerSession, action: dict[str, str], reply: list[tuple[str, str]]
    ) -> None:
        user = self.users.get(action.get("username", ""))
        if user is None or user.secret != action.get("secret"):
            await asyncio.sleep(self.refuse_delay_s)  # Asterisk also delays the refusal
            failed = ("Message", "Authentication failed")
            session.write(encode_frame([("Response", "Error"), *reply, failed]))
            session.writer.close()
            await self._count_login(refused=True)
            return
        session.username = action["username"]
        session.mask = self._allowed(session, parse_mask(action.get("events")))
        accepted = ("Message", "Authentication accepted")
        session.write(encode_frame([("Response", "Success"), *reply, accepted]))
        self.send_event(
            encode_frame(
                [
                    ("Event", "FullyBooted"),
                    ("Privilege", "system,all"),
                    ("Uptime", "90"),
                    ("LastReload", "40"),
                    ("Status", "Fully Booted"),
                ]
            )
        )
        await self._count_login(refused=False)

    async def _count_login(self, *, refused: bool) -> None:
        async with self._login_changed:
            if refused:
                self.login_failures += 1
            else:
                self.logins += 1
            self._login_changed.notify_all()

    def _allowed(self, session: ServerSession, requested: frozenset[str]) -> frozenset[str]:
        user = self.users.get(session.username or "")
        return intersect_classes(user.read if user else frozenset(), requested)

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


_DENIED = ("Message", "Permission denied")
_FOLLOWS = ("Message", "Command output follows")
