"""A fake Asterisk host for deploy/status.sh: stub `asterisk`, `pgrep`, `ss`, `docker` on a private PATH.

The PATH holds only symlinks to the few real tools the script needs plus the generated stubs, so the
machine's own docker, curl or ss never leak in. The stubs answer with real Asterisk output, taken from
the AMI capture in tests/fixtures/ami/basics.txt (the `Output:` lines of its two `Command` actions), or
from a capture of tests/fixtures/versions (`captured_cdr_status`). `freepbx()` makes it a FreePBX host.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.doubles.captured import captured_session, version_folder
from tests.paths import AMI_FIXTURES, REPO

STATUS_SH = REPO / "deploy" / "status.sh"
BASH = shutil.which("bash") or "/bin/bash"
# What status.sh itself runs; everything else on the fake PATH is a stub or chosen by the test.
BASE_TOOLS = (
    "awk", "basename", "cat", "dirname", "grep", "head", "id", "sed", "sort", "tail", "timeout", "tr",
)  # fmt: skip
UNREACHABLE = "Unable to connect to remote asterisk (does /var/run/asterisk/asterisk.ctl exist?)"


def command_outputs() -> tuple[str, str]:
    """`core show version` and `cdr show status` as Asterisk 22 printed them (from the AMI capture)."""
    text = (AMI_FIXTURES / "basics.txt").read_text(encoding="utf-8").replace("\r\n", "\n")
    outputs = []
    for block in text.split("\n\n"):
        lines = block.split("\n")
        if "Message: Command output follows" in lines and "Response: Success" in lines:
            outputs.append(
                "\n".join(line[len("Output: ") :] for line in lines if line.startswith("Output: "))
            )
    version, cdr_status = outputs[:2]
    assert version.startswith("Asterisk 22") and "Registered Backends" in cdr_status
    return version + "\n", cdr_status + "\n"


VERSION_OUTPUT, CDR_STATUS_OUTPUT = command_outputs()


def captured_cdr_status(version: str, variant: str = "") -> str:
    """`cdr show status` as a captured Asterisk of fixtures/versions printed it (a variant's, if given)."""
    return "\n".join(captured_session(version_folder(version, variant)).commands["cdr show status"]) + "\n"


@dataclass
class FakeHost:
    """A folder with bin/ (the PATH), asterisk/ (ASTERISK_CONFIG_DIR) and connector.env."""

    root: Path

    def __post_init__(self) -> None:
        self.bin.mkdir(parents=True, exist_ok=True)
        self.config.mkdir(exist_ok=True)
        for tool in BASE_TOOLS:
            self.link(tool)

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def config(self) -> Path:
        return self.root / "asterisk"

    @property
    def env_file(self) -> Path:
        return self.root / "connector.env"

    def link(self, tool: str, target: str | None = None) -> None:
        """Put a real program on the fake PATH."""
        real = target or shutil.which(tool)
        assert real, f"{tool} is needed by the status.sh tests"
        (self.bin / tool).unlink(missing_ok=True)
        (self.bin / tool).symlink_to(real)

    def stub(self, name: str, body: str) -> None:
        """Write a bash stub command."""
        path = self.bin / name
        path.write_text(f"#!{BASH}\n{body}", encoding="utf-8")
        path.chmod(0o755)

    def print_stub(self, name: str, output: str, status: int = 0) -> None:
        """A command printing `output` whatever its arguments, and exiting with `status`."""
        self.stub(name, f"cat <<'OUTPUT'\n{output.rstrip(chr(10))}\nOUTPUT\nexit {status}\n")

    def asterisk(self, version: str = VERSION_OUTPUT, cdr_status: str = CDR_STATUS_OUTPUT) -> None:
        """A running Asterisk answering `-rx` like the real one (unknown commands fail)."""
        self.stub(
            "asterisk",
            f"""[ "$1" = -rx ] || exit 2
case "$2" in
'core show version') cat <<'OUTPUT'
{version.rstrip()}
OUTPUT
;;
'cdr show status') cat <<'OUTPUT'
{cdr_status.rstrip()}
OUTPUT
;;
*) echo "No such command '$2'"; exit 1 ;;
esac
""",
        )

    def asterisk_stopped(self) -> None:
        """The binary is there but its console is not (Asterisk stopped)."""
        self.print_stub("asterisk", UNREACHABLE, status=1)
        self.print_stub("pgrep", "", status=1)

    def listening(self, *addresses: str) -> None:
        """`ss -ltn` showing these listeners (plus an unrelated one), as iproute2 prints them."""
        lines = ["State  Recv-Q Send-Q Local Address:Port  Peer Address:PortProcess"]
        lines += [
            f"LISTEN 0      4096       {address}       0.0.0.0:*"
            for address in ("127.0.0.53%lo:53", *addresses)
        ]
        self.print_stub("ss", "\n".join(lines))

    def docker(self, ps_lines: str, status: int = 0) -> None:
        """`docker --version` and `docker ps` answering `ps_lines` (name TAB status per line)."""
        self.stub(
            "docker",
            f"""case "$1" in
--version) echo 'Docker version 28.2.2, build e6534b4' ;;
ps) printf '%b' '{ps_lines}'; exit {status} ;;
*) exit 1 ;;
esac
""",
        )

    def configure(self, manager: str | Path, cdr_manager: str | Path) -> None:
        """Install manager.conf and cdr_manager.conf (a fixture path, or text)."""
        self.install("manager.conf", manager)
        self.install("cdr_manager.conf", cdr_manager)

    def install(self, name: str, source: str | Path) -> None:
        """Write one file of ASTERISK_CONFIG_DIR (a fixture path, or text)."""
        text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
        (self.config / name).write_text(text, encoding="utf-8")

    def freepbx(self) -> None:
        """Make this a FreePBX host: `fwconsole` on PATH (status.sh only looks for it)."""
        self.print_stub("fwconsole", "")

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run deploy/status.sh on this host (not a terminal: no colours)."""
        base = {
            "PATH": str(self.bin),
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "ASTERISK_CONFIG_DIR": str(self.config),
            "CONNECTOR_ENV_FILE": str(self.env_file),
            "STATUS_TIMEOUT": "10",
        }
        return subprocess.run(
            [BASH, str(STATUS_SH), *args],
            env={**base, **env},
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
        )


def python_as_python3(host: FakeHost) -> None:
    """Offer this interpreter as `python3` (status.sh's fallback when curl is missing)."""
    host.link("python3", os.path.realpath(sys.executable))
