"""A captured AMI session of fixtures/versions, taken apart for the fake AMI server to play back.

Each `ami-session.txt` holds every byte a client received from a real Asterisk: the banner, the Login
response, the answers to its Command actions and the Cdr events. The commands the capture sent are
not in that file; they are in the order fixtures/versions/README.md gives (the main session asks
four, the variant sessions only `cdr show status`), and each answer carries its ActionID's number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from connector.demo.ami_server import FRAME_END, AmiUser
from tests.doubles.ami_server import transcript_frames
from tests.paths import VERSION_FIXTURES

USER = "manager-sipstack"  # the capture's manager.conf user (secret `labsecret`)
SECRET = "labsecret"
# ActionID suffix → the command sent with it, as the capture script sent them (README there).
MAIN_COMMANDS = {
    2: "cdr show status",
    3: "core show version",
    4: f"manager show user {USER}",
    5: "module show like cdr_manager",
}
VARIANT_COMMANDS = {2: "cdr show status"}


@dataclass(frozen=True)
class CapturedSession:
    """What one real Asterisk sent: its banner, its command answers, its Cdr events."""

    banner: str
    commands: dict[str, tuple[str, ...]]  # command → its Output lines, as FakeAmiServer(commands=) takes
    cdr_frames: tuple[bytes, ...]  # each with its frame end


def _headers(frame: bytes) -> list[tuple[str, str]]:
    lines = frame.removesuffix(FRAME_END).decode("utf-8").split("\r\n")
    return [(name, value) for name, _, value in (line.partition(": ") for line in lines if line)]


def captured_session(folder: Path) -> CapturedSession:
    """Take apart `folder/ami-session.txt` (a version folder or one of its variants)."""
    data = (folder / "ami-session.txt").read_bytes()
    banner = data.split(b"\r\n", 1)[0].decode("ascii")
    asked = MAIN_COMMANDS if folder.parent == VERSION_FIXTURES else VARIANT_COMMANDS
    commands: dict[str, tuple[str, ...]] = {}
    frames = transcript_frames(data)
    for frame in frames:
        headers = _headers(frame)
        fields = dict(headers)
        if fields.get("Message") != "Command output follows":
            continue
        number = int(fields["ActionID"].rsplit("-", 1)[1])
        commands[asked[number]] = tuple(value for name, value in headers if name == "Output")
    cdrs = tuple(frame for frame in frames if frame.startswith(b"Event: Cdr\r\n"))
    return CapturedSession(banner, commands, cdrs)


def version_folder(version: str, variant: str = "") -> Path:
    """fixtures/versions/VERSION, or one of its variants/ folders."""
    folder = VERSION_FIXTURES / version
    return folder / "variants" / variant if variant else folder


def cdr_headers(frame: bytes) -> list[tuple[str, str]]:
    """The headers of one captured frame, in order, values as Asterisk sent them."""
    return _headers(frame)


def captured_users(version: str) -> dict[str, AmiUser]:
    """The capture's manager.conf user, with the read classes its `manager show user` printed."""
    answer = captured_session(version_folder(version)).commands[MAIN_COMMANDS[4]]
    for line in answer:
        name, _, value = line.partition(":")
        if name.strip() == "read perm":
            classes = frozenset(item.strip() for item in value.split(",") if item.strip())
            return {USER: AmiUser(SECRET, classes)}
    raise ValueError(f"{version}: no read perm in the answer to {MAIN_COMMANDS[4]!r}")
