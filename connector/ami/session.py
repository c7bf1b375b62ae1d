"""One AMI connection: connect, log in, send actions and await their responses, close.

`AmiClient` (connector.ami.client) owns the reconnect loop; `connector check` uses a session
directly for one-off questions (does the login work, what does `cdr show status` say).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from panoramisk import actions

from connector.ami.protocol import AmiProtocol, CdrCallback
from connector.ami.tls import TlsState, handshake_problem, tls_state
from connector.errors import HandshakeFailed, LoginRefused

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


async def _tcp_connect(host: str, port: int) -> socket.socket:
    """A connected non-blocking socket to the first address of `host` that accepts."""
    loop = asyncio.get_running_loop()
    addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as refused:
            sock.close()
            error = refused
        except BaseException:
            sock.close()
            raise
        else:
            return sock
    raise error


class AmiSession:
    """One TCP connection to AMI with our protocol: login, actions, close."""

    def __init__(self, protocol: AmiProtocol, host: str, port: int) -> None:
        self.protocol = protocol
        self.host = host
        self.port = port
        self.reading_paused = False
        self.pauses = 0  # how many times reading was paused: the keepalive's "was it paused?"

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        on_cdr: CdrCallback,
        *,
        timeout_s: float = 10.0,
        tls: ssl.SSLContext | None = None,
        handshake_timeout_s: float = 10.0,
        ca_file: Path | None = None,
    ) -> AmiSession:
        """Connect (over TLS with `tls`) and wait for AMI's banner.

        Raises OSError or TimeoutError when nothing accepts the TCP connection within `timeout_s`
        (AMI down, or the host unreachable), HandshakeFailed when the port accepted it but the TLS
        handshake failed or no banner came within `handshake_timeout_s` (a configuration problem).
        """
        loop = asyncio.get_running_loop()
        where = f"{host}:{port}"
        # The TCP connect has its own short limit: only it tells "AMI is not there (yet)" apart.
        async with asyncio.timeout(timeout_s):
            sock = await _tcp_connect(host, port)
        try:
            async with asyncio.timeout(handshake_timeout_s):
                _, protocol = await loop.create_connection(
                    lambda: AmiProtocol(on_cdr),
                    sock=sock,
                    ssl=tls,
                    server_hostname=host if tls else None,
                )
        except (ssl.SSLError, OSError, TimeoutError) as error:
            sock.close()
            if tls is None:
                raise
            problem = handshake_problem(error, host, ca_file)
            raise HandshakeFailed(f"{where}: {problem}", during_tls=True) from None
        except BaseException:
            sock.close()
            raise
        session = cls(protocol, host, port)
        try:
            async with asyncio.timeout(handshake_timeout_s):
                await asyncio.shield(protocol.banner_received)
        except (TimeoutError, ConnectionError) as error:
            session.abort("no AMI banner")
            hint = (
                "is AMI_PORT Asterisk's TLS port? then AMI_TLS must match"
                if tls
                else "if it is Asterisk's TLS port (tlsbindaddr, 5039 by default), set AMI_TLS=true; "
                "else check AMI_PORT"
            )
            late = "closed the connection" if isinstance(error, ConnectionError) else "sent nothing"
            raise HandshakeFailed(
                f"{where} accepted the connection but {late} instead of AMI's banner: {hint}",
                during_tls=False,
            ) from None
        except BaseException:
            session.abort("cancelled while waiting for the banner")
            raise
        return session

    @property
    def tls(self) -> TlsState | None:
        """The TLS session's protocol and certificate (None over plain TCP)."""
        return tls_state(self.protocol.transport.get_extra_info("ssl_object"))

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
            self.pauses += 1
        self.reading_paused = not reading

    def abort(self, reason: str) -> None:
        """Drop the connection at once."""
        self.protocol.abort(reason)
