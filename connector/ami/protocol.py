"""The AMI wire protocol: panoramisk's AMIProtocol with its data-losing defects fixed.

panoramisk 1.4 (README, "Input robustness") decodes every TCP read on its own with errors ignored, strips the
trailing empty header of a frame, folds headers into a dict, dispatches events through callbacks
whose exceptions kill the connection, and reconnects through its Manager. This subclass keeps
panoramisk's actions, responses and `send()`, and overrides only the reading side:

- Framing happens on bytes, then each complete frame is decoded whole. `\\r\\n\\r\\n` is ASCII and
  can never occur inside a UTF-8 sequence, so a character split across two TCP reads is decoded
  once both halves are in (the effect of an incremental decoder over the whole stream, without
  decoding the frames we skip). Invalid bytes become U+FFFD, never dropped.
- Headers are parsed into ordered (key, value) pairs: empty values (`UserField: `), order and
  repeated keys are kept byte-exact (`Headers`).
- Malformed input (a line without a colon, a line over `max_line_bytes`, invalid UTF-8, a frame
  over `max_frame_bytes` without an end) is counted in `ami_frames_malformed_total` and logged;
  the well-formed frames around it are processed normally.
- Each frame is handled in its own try block, and the Cdr callback is guarded: an exception is
  logged and counted (`ami_callback_errors_total`), the rest of the read is still processed and
  the connection stays up.
- Events other than Cdr and Shutdown are recognised by their first bytes and skipped undecoded.
- Losing the connection (or `Event: Shutdown`) resolves `self.lost` and fails pending actions;
  reconnecting is the owner's job (connector.ami.client), not panoramisk's Manager.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from panoramisk.ami_protocol import AMIProtocol as PanoramiskProtocol
from panoramisk.message import Message

from connector.metrics import AMI_CALLBACK_ERRORS, AMI_FRAMES_MALFORMED
from connector.outbox.records import Headers

log = logging.getLogger(__name__)

FRAME_END = b"\r\n\r\n"
EOL = "\r\n"
BANNER_PREFIX = "Asterisk Call Manager/"
CDR_PREFIX = b"Event: Cdr\r\n"
SHUTDOWN_PREFIX = b"Event: Shutdown\r\n"
EVENT_PREFIX = b"Event: "
RESPONSE_PREFIX = b"Response: "
MAX_LINE_BYTES = 64 * 1024
MAX_FRAME_BYTES = 4 * 1024 * 1024

CdrCallback = Callable[[Headers], None]

# Header names repeat in every frame: one shared str per name instead of one per frame.
_KEYS: dict[str, str] = {}


def parse_headers(
    frame: bytes | bytearray, max_line_bytes: int = MAX_LINE_BYTES
) -> tuple[Headers, list[str], list[str]]:
    """Parse one frame into ordered headers, the lines without a colon, and the problems seen."""
    problems: list[str] = []
    if len(frame) > max_line_bytes:
        kept = [line for line in frame.split(b"\r\n") if len(line) <= max_line_bytes]
        if len(kept) != frame.count(b"\r\n") + 1:
            problems.append(f"line longer than {max_line_bytes} bytes dropped")
            frame = b"\r\n".join(kept)
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        text = frame.decode("utf-8", "replace")
        problems.append("invalid UTF-8 replaced by U+FFFD")
    pairs: list[tuple[str, str]] = []
    loose: list[str] = []
    keys = _KEYS
    for line in text.split(EOL):
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(":")
            if not sep:
                loose.append(line)
                continue
        pairs.append((keys.setdefault(key, key), value))
    return tuple(pairs), loose, problems


def message_from_headers(headers: Headers, content: str = "") -> Message:
    """Build panoramisk's Message (repeated keys become lists) and keep the ordered headers."""
    fields: dict[str, Any] = {}
    for key, value in headers:
        if key in fields:
            previous = fields[key]
            fields[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            fields[key] = value
    message = Message(fields, content)
    message.headers = headers
    return message


def header(headers: Headers, name: str) -> str | None:
    """Return the first value of `name` (case-insensitive), or None."""
    wanted = name.lower()
    for key, value in headers:
        if key.lower() == wanted:
            return value
    return None


class AmiProtocol(PanoramiskProtocol):  # type: ignore[misc]
    """One AMI connection: frames bytes, hands Cdr headers to `on_cdr`, answers our actions."""

    def __init__(
        self,
        on_cdr: CdrCallback,
        *,
        max_line_bytes: int = MAX_LINE_BYTES,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self._on_cdr = on_cdr
        self.max_line_bytes = max_line_bytes
        self.max_frame_bytes = max_frame_bytes
        self.banner: str | None = None
        self.close_reason = "the server closed the connection"
        self.frames_received = 0
        self.events_received = 0
        self.cdrs_received = 0
        loop = asyncio.get_running_loop()
        self.lost: asyncio.Future[BaseException | None] = loop.create_future()
        self.banner_received: asyncio.Future[str] = loop.create_future()
        self._pending = bytearray()
        self._discarding = False
        self._close_after_read = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Set up panoramisk's state (responses, queue) with our logger and UTF-8."""
        super().connection_made(transport)
        self.log = log
        self.encoding = "utf-8"

    def data_received(self, data: bytes) -> None:
        """Append bytes, process every complete frame, keep the incomplete tail for the next read."""
        buf = self._pending
        start = max(len(buf) - 3, 0)
        buf += data
        if self.banner is None:
            if not self._take_banner():
                return
            start = 0
        if buf.find(FRAME_END, start) < 0:
            self._guard_size()
            return
        frames = buf.split(FRAME_END)
        self._pending = frames.pop()
        if self._discarding:
            self._discarding = False
            frames.pop(0)
        for frame in frames:
            self._frame(frame)
        self._guard_size()
        if self._close_after_read:
            self.transport.close()

    def _take_banner(self) -> bool:
        end = self._pending.find(b"\r\n")
        if end < 0:
            self._guard_size()
            return False
        self.banner = self.version = self._pending[:end].decode("utf-8", "replace")
        del self._pending[: end + 2]
        if not self.banner_received.done():
            self.banner_received.set_result(self.banner)
        if not self.banner.startswith(BANNER_PREFIX):
            log.warning("unexpected AMI banner %r: is this an Asterisk manager port?", self.banner)
        return True

    def _guard_size(self) -> None:
        # Bound the memory one endless frame can take; resynchronise on the next frame end.
        if len(self._pending) <= self.max_frame_bytes:
            return
        if not self._discarding:
            AMI_FRAMES_MALFORMED.inc()
            log.warning(
                "AMI frame over %d bytes without an end: discarded up to the next frame",
                self.max_frame_bytes,
            )
            self._discarding = True
        self._pending = self._pending[-3:]

    def _frame(self, frame: bytearray) -> None:
        self.frames_received += 1
        try:
            if not frame or frame.startswith((b"\r", b"\n")):
                frame = frame.lstrip(b"\r\n")
                if not frame:
                    return
            if frame.startswith(CDR_PREFIX):
                self._cdr(frame)
            elif frame.startswith(EVENT_PREFIX):
                self._event(frame)
            elif frame.startswith(RESPONSE_PREFIX):
                self._response(frame)
            else:
                self._other(frame)
        except Exception:
            AMI_CALLBACK_ERRORS.inc()
            log.exception("error while handling an AMI frame; the connection stays up")

    def _cdr(self, frame: bytearray) -> None:
        headers, loose, problems = parse_headers(frame, self.max_line_bytes)
        self._deliver_cdr(frame, headers, loose, problems)

    def _deliver_cdr(self, frame: bytearray, headers: Headers, loose: list[str], problems: list[str]) -> None:
        self.events_received += 1
        self.cdrs_received += 1
        if loose:
            problems.append(f"{len(loose)} line(s) without a colon dropped")
        if problems:
            self._malformed(frame, problems)
        try:
            self._on_cdr(headers)
        except Exception:
            AMI_CALLBACK_ERRORS.inc()
            log.exception("error while storing a Cdr event (UniqueID %s)", header(headers, "UniqueID"))

    def _event(self, frame: bytearray) -> None:
        self.events_received += 1
        if frame.startswith(SHUTDOWN_PREFIX):
            headers, _, _ = parse_headers(frame, self.max_line_bytes)
            self._shutdown(headers)
        elif self.responses and b"\r\nActionID: " in frame:
            # Events that belong to one of our actions (lists); others are skipped undecoded.
            self._response(frame)

    def _response(self, frame: bytearray) -> None:
        headers, loose, problems = parse_headers(frame, self.max_line_bytes)
        if problems or not headers:
            self._malformed(frame, problems or ["no header"])
        self._answer(headers, loose)

    def _answer(self, headers: Headers, loose: list[str]) -> None:
        # `Response: Follows` (Asterisk < 14 Command output) carries its body as bare lines.
        message = message_from_headers(headers, "\n".join(loose))
        if self.responses.get(message.id) is None and (
            not message.action_id or self.responses.get(message.action_id) is None
        ):
            log.debug("AMI response to no pending action: %r", message)
            return
        self.handle_message(message)

    def _other(self, frame: bytearray) -> None:
        headers, loose, problems = parse_headers(frame, self.max_line_bytes)
        if not headers:
            self._malformed(frame, [*problems, "no line with a colon"])
            return
        first = headers[0][0].lower()
        if first == "event" and headers[0][1] == "Cdr":
            self._deliver_cdr(frame, headers, loose, problems)
            return
        if loose or problems:
            self._malformed(frame, [*problems, f"{len(loose)} line(s) without a colon"])
        if first in ("event", "response"):
            self._answer(headers, loose)
        else:
            log.debug("AMI frame that is neither an event nor a response ignored: %r", frame[:80])

    def _malformed(self, frame: bytes | bytearray, problems: list[str]) -> None:
        AMI_FRAMES_MALFORMED.inc()
        log.warning(
            "malformed AMI frame (%s), %d bytes starting %r",
            "; ".join(problems),
            len(frame),
            bytes(frame[:120]),
        )

    def _shutdown(self, headers: Headers) -> None:
        detail = ", ".join(f"{k}: {v}" for k, v in headers[1:] if k != "Privilege")
        log.warning("Asterisk is shutting down (%s): reconnecting", detail)
        self.close_reason = f"Asterisk shut down ({detail})"
        # Close once the frames already read are processed.
        self._close_after_read = True

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail pending actions and resolve `lost`; reconnecting is left to the owner."""
        self.closed = True
        if self._pending.strip(b"\r\n"):
            AMI_FRAMES_MALFORMED.inc()
            log.warning(
                "AMI connection closed in the middle of a frame: %d bytes starting %r lost",
                len(self._pending),
                bytes(self._pending[:120]),
            )
        self._pending = bytearray()
        for action in list(self.responses.values()):
            if not action.future.done():
                action.future.set_exception(ConnectionError("AMI connection lost"))
                # Mark it retrieved: an action nobody awaits (a Logoff) must not log a traceback.
                action.future.exception()
        self.responses.clear()
        if exc is not None:
            self.close_reason = f"connection error: {exc}"
        if not self.banner_received.done():
            self.banner_received.set_exception(ConnectionError("AMI closed the connection before its banner"))
            self.banner_received.exception()  # retrieved: nobody may be waiting for it
        if not self.lost.done():
            self.lost.set_result(exc)

    def close(self) -> None:
        """Close the transport (panoramisk's close() would re-queue actions for its Manager)."""
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self, reason: str) -> None:
        """Drop the connection at once (half-open link, shutdown): nothing more is read."""
        self.close_reason = reason
        self.closed = True
        self.transport.abort()
