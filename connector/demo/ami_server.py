"""A fake Asterisk Manager Interface server speaking the real protocol over TCP, for `connector demo`.

It behaves like Asterisk 22 on the points the connector depends on while it runs: the banner line,
Login (accepted, or `Authentication failed` then the connection is closed), events only after login
and only of the classes both the user's `read=` and the login's `Events:` mask allow, Ping and
Logoff. The tests' double (tests/doubles/ami_server.py) extends it with what only tests need:
commands, replayed transcripts, floods, silent Pings, a server that goes down and comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

BANNER = "Asterisk Call Manager/11.0.0"
FRAME_END = b"\r\n\r\n"
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
    """An AMI server on 127.0.0.1 (port 0 = any free port): Login, events, Ping, Logoff."""

    def __init__(
        self,
        users: Mapping[str, AmiUser] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        banner: str = BANNER,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.users = dict(users) if users is not None else {"connector": AmiUser("secret")}
        self.tls = tls  # a server context: AMI inside TLS, as Asterisk's tlsenable=yes
        self.host, self._port = host, port
        self.banner = banner
        self.sessions: list[ServerSession] = []
        self.logins = self.login_failures = 0
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
        """Listen (again, on the same port after stop())."""
        self._server = await asyncio.start_server(
            self._handle, self.host, self._port, limit=1 << 20, ssl=self.tls
        )
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

    def send_event(self, frame: bytes) -> int:
        """Send one event frame to each logged-in session allowed to see it; return how many."""
        classes = event_classes(frame)
        targets = [s for s in self.logged_in if s.wants(classes)]
        for session in targets:
            session.write(frame)
        return len(targets)

    async def drain(self) -> None:
        """Wait until written bytes are handed to the kernel (or the connections are gone)."""
        for session in self.logged_in:
            with contextlib.suppress(ConnectionError):
                await session.writer.drain()

    def _new_session(self, writer: asyncio.StreamWriter) -> ServerSession:
        return ServerSession(writer)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = self._new_session(writer)
        self.sessions.append(session)
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
        name = action.get("action", "").lower()
        reply = [("ActionID", action["actionid"])] if "actionid" in action else []
        if name == "login":
            await self._login(session, action, reply)
        elif not session.logged_in:
            session.write(encode_frame([("Response", "Error"), *reply, _DENIED]))
        else:
            await self._logged_in_action(session, name, action, reply)

    async def _logged_in_action(
        self, session: ServerSession, name: str, action: dict[str, str], reply: list[tuple[str, str]]
    ) -> None:
        if name == "ping":
            self._pong(session, reply)
        elif name == "logoff":
            bye = ("Message", "Thanks for all the fish.")
            session.write(encode_frame([("Response", "Goodbye"), *reply, bye]))
            session.writer.close()
        else:
            text = f"Invalid/unknown command: {action.get('action', '')}. Use Action: ListCommands"
            session.write(encode_frame([("Response", "Error"), *reply, ("Message", text)]))

    def _pong(self, session: ServerSession, reply: list[tuple[str, str]]) -> None:
        pong = [("Ping", "Pong"), ("Timestamp", f"{time.time():.6f}")]
        session.write(encode_frame([("Response", "Success"), *reply, *pong]))

    async def _login(
        self, session: ServerSession, action: dict[str, str], reply: list[tuple[str, str]]
    ) -> None:
        user = self.users.get(action.get("username", ""))
        if user is None or user.secret != action.get("secret"):
            await self._refuse(session, reply)
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

    async def _refuse(self, session: ServerSession, reply: list[tuple[str, str]]) -> None:
        failed = ("Message", "Authentication failed")
        session.write(encode_frame([("Response", "Error"), *reply, failed]))
        session.writer.close()

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


_DENIED = ("Message", "Permission denied")
