"""One AMI connection: connect, log in, send actions and await their responses, close.

`AmiClient` (connector.ami.client) owns the reconnect loop; `connector check` uses a session
directly for one-off questions (does the login work, what does `cdr show status` say).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from panoramisk import actions

from connector.ami.protocol import AmiProtocol, CdrCallback
from connector.errors import LoginRefused

# Asterisk sends an event only if its class is both in the user's `read=` and in this mask:
# Cdr events, plus `system` for Shutdown/FullyBooted. A flood of call events never reaches us.
DEFAULT_EVENTS = "cdr,system"

Message = Any  # panoramisk.message.Message (untyped); keeps the ordered headers in `.headers`
ActionFields = Mapping[str, str | Sequence[str]]


def command_output(message: Message) -> list[str]:
    """Return the CLI lines of a Command response (`Output:` headers, or an old `Follows` body)."""
    lines = [value for key, value in getattr(message, "headers", ()) if key == "Output"]
    if not lines and message.content:
        lines = str(message.content).split("\n")
    return lines


class AmiSession:
    """One TCP connection to AMI with our protocol: login, actions, close."""

    def __init__(self, protocol: AmiProtocol, host: str, port: int) -> None:
        self.protocol = protocol
        self.host = host
        self.port = port

    @classmethod
    async def open(cls, host: str, port: int, on_cdr: CdrCallback, *, timeout_s: float = 10.0) -> AmiSession:
        """Connect over TCP; raise OSError or TimeoutError when AMI cannot be reached."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            _, protocol = await loop.create_connection(lambda: AmiProtocol(on_cdr), host, port)
        return cls(protocol, host, port)

    @property
    def lost(self) -> asyncio.Future[BaseException | None]:
        """Resolved when the connection is gone."""
        return self.protocol.lost

    @property
    def banner(self) -> str | None:
        """The server's first line, e.g. `Asterisk Call Manager/11.0.0`."""
        return self.protocol.banner

    async def send_action(self, fields: ActionFields, timeout_s: float = 10.0) -> Message:
        """Send an action and return its response; raise TimeoutError or ConnectionError."""
        if self.protocol.closed:
            raise ConnectionError("AMI connection is closed")
        action = actions.Action(dict(fields))
        future = self.protocol.send(action)
        try:
            return await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            self.protocol.responses.pop(action.id, None)
            raise

    async def login(
        self, username: str, password: str, *, events: str = DEFAULT_EVENTS, timeout_s: float = 10.0
    ) -> Message:
        """Log in; raise LoginRefused with Asterisk's message when the credentials are refused."""
        fields = {"Action": "Login", "Username": username, "Secret": password, "Events": events}
        response = await self.send_action(fields, timeout_s)
        if not response.success:
            self.close()
            raise LoginRefused(str(response.message or response.response or "login refused"))
        return response

    async def ping(self, timeout_s: float) -> None:
        """Send Ping and wait for its answer; raise TimeoutError when none comes."""
        await self.send_action({"Action": "Ping"}, timeout_s)

    async def command(self, command: str, timeout_s: float = 10.0) -> list[str]:
        """Run a CLI command (`Action: Command`) and return its output lines."""
        response = await self.send_action({"Action": "Command", "Command": command}, timeout_s)
        return command_output(response)

    async def logoff(self, timeout_s: float = 2.0) -> None:
        """Say goodbye (Asterisk then logs a clean logoff), then close."""
        try:
            await self.send_action({"Action": "Logoff"}, timeout_s)
        except (TimeoutError, ConnectionError):
            pass
        self.close()

    def close(self) -> None:
        """Close the connection."""
        self.protocol.close()

    def set_reading(self, reading: bool) -> None:
        """Pause or resume reading from the socket (TCP flow control does the rest)."""
        transport = self.protocol.transport
        if transport.is_closing():
            return
        if reading:
            transport.resume_reading()
        else:
            transport.pause_reading()

    def abort(self, reason: str) -> None:
        """Drop the connection at once."""
        self.protocol.abort(reason)
