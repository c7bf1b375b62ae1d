"""`connector check`: diagnose a set-up in one command, one ✓ / ✗ / ! line per check.

Every check is listed every time, in the same order: one that cannot run because an earlier one
failed (no login → no read-class, CDR-logging, cdr_manager or batch-mode check) is `skip` with the
reason, so a script sees the same list in a healthy and a broken set-up. Each failure names the fix, and
the FreePBX file for it. Exit code 0 only when nothing failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from connector.ami.session import AmiSession
from connector.ami.tls import WARN_DAYS
from connector.api.client import ApiClient
from connector.backfill.db_check import database_checks
from connector.config import Settings
from connector.errors import AuthRefused, HandshakeFailed, LoginRefused, Rejected, RetryLater

MIN_FREE_BYTES = 100 * 1024 * 1024
LOW_FREE_BYTES = 1024 * 1024 * 1024
TIMEOUT_S = 5.0


class Status(StrEnum):
    """The outcome of one check."""

    OK = "ok"
    FAIL = "fail"
    WARN = "warn"
    SKIP = "skip"


SYMBOLS = {Status.OK: "✓", Status.FAIL: "✗", Status.WARN: "!", Status.SKIP: "-"}
COLOURS = {
    Status.OK: "\033[32m",
    Status.FAIL: "\033[31m",
    Status.WARN: "\033[33m",
    Status.SKIP: "\033[2m",
}
# The checks that need a logged-in AMI session, in the order they are listed.
LOGGED_IN_CHECKS = ("AMI read class cdr", "CDR logging", "cdr_manager backend", "CDR batch mode")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
# Where each fix goes. FreePBX generates manager.conf, cdr.conf and cdr_manager.conf, each #including
# *_custom.conf files it never writes; the AMI users of its GUI are written to manager_additional.conf.
MANAGER_USERS = (
    "/etc/asterisk/manager.conf (FreePBX: manager_custom.conf, or Settings > Asterisk Manager Users)"
)
MANAGER_GENERAL = "/etc/asterisk/manager.conf [general] (FreePBX: manager_custom.conf, under [general](+))"
CDR_GENERAL = "/etc/asterisk/cdr.conf [general] (FreePBX: cdr_general_custom.conf)"
CDR_MANAGER_GENERAL = "/etc/asterisk/cdr_manager.conf [general] (FreePBX: cdr_manager_general_custom.conf)"


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def _ok(name: str, detail: str) -> Check:
    return Check(name, Status.OK, detail)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, Status.FAIL, detail, fix)


def _warn(name: str, detail: str, fix: str = "") -> Check:
    return Check(name, Status.WARN, detail, fix)


def _skipped(names: Sequence[str], reason: str) -> list[Check]:
    return [Check(name, Status.SKIP, reason) for name in names]


def read_classes(lines: Sequence[str]) -> list[str] | None:
    """The `read perm:` classes of `manager show user NAME` output, or None if absent."""
    for line in lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "read perm":
            return [item.strip().lower() for item in value.split(",") if item.strip()]
    return None


def _field(text: str, label: str) -> str | None:
    """The value after `label:` on a line of `cdr show status` output, or None if it has no such line."""
    found = re.search(rf"^\s*{re.escape(label)}:[ \t]*(.*?)\s*$", text, re.MULTILINE)
    return found.group(1) if found else None


def cdr_status_checks(lines: Sequence[str]) -> list[Check]:
    """Judge `cdr show status` output: logging on, cdr_manager registered and active, no batch mode."""
    text = "\n".join(lines)
    return [_logging_check(text), _backend_check(text), batch_mode_check(text)]


def _logging_check(text: str) -> Check:
    logging = _field(text, "Logging")
    if logging is None or logging.lower() != "enabled":
        return _fail(
            "CDR logging",
            f"cdr show status: Logging {logging or 'not shown'}",
            f"set enable = yes in {CDR_GENERAL}, then: asterisk -rx 'module reload cdr'",
        )
    # Asterisk 16 and 18 print no such line (they have no canceldispositionenabled).
    cancel = _field(text, "Cancel disposition enabled")
    if cancel is None:
        return _ok("CDR logging", "cdr show status: Logging Enabled")
    meaning = " (a call given up while ringing is CANCEL, not NO ANSWER)" if cancel.lower() == "yes" else ""
    return _ok(
        "CDR logging", f"cdr show status: Logging Enabled, Cancel disposition enabled: {cancel}{meaning}"
    )


def _backend_check(text: str) -> Check:
    backends = text.split("Registered Backends", 1)[1] if "Registered Backends" in text else ""
    manager = re.search(r"^\s*cdr_manager\b(.*)$", backends, re.MULTILINE)
    if manager is None:
        return _fail(
            "cdr_manager backend",
            "cdr_manager is not a registered CDR backend: no Cdr events are sent",
            "asterisk -rx 'module load cdr_manager.so' (and load it in modules.conf)",
        )
    if "suspended" in manager.group(1).lower():
        return _fail(
            "cdr_manager backend",
            "cdr_manager is registered but (suspended): CDRs are lost on the Asterisk side",
            f"set enabled = yes in {CDR_MANAGER_GENERAL}, then: asterisk -rx 'module reload cdr_manager.so'",
        )
    return _ok("cdr_manager backend", "cdr_manager registered and active")


def _leading_number(value: str | None) -> str | None:
    found = re.match(r"\d+", value or "")
    return found.group(0) if found else None


def batch_mode_check(text: str) -> Check:
    """Warn when Asterisk holds CDRs back in batch mode (late Cdr events, a batch lost in a crash)."""
    mode = _field(text, "Mode")
    if mode is None:
        return _warn(
            "CDR batch mode",
            "cdr show status has no Mode: line: cannot tell whether Asterisk holds CDRs back",
            f"make sure batch = no in {CDR_GENERAL}",
        )
    if mode.lower() != "batch":
        return _ok("CDR batch mode", f"off (Mode: {mode}): each CDR is posted when its call ends")
    size = _leading_number(_field(text, "Maximum batch size")) or "?"
    seconds = _leading_number(_field(text, "Maximum batch time")) or "?"
    # safeshutdown only makes a clean shutdown wait for the batch; a crash loses it either way.
    if (_field(text, "Safe shutdown") or "").lower() == "enabled":
        shutdown = "safeshutdown covers only a clean shutdown"
    else:
        shutdown = "Safe shutdown is off: even a clean shutdown may lose it"
    held = f"up to {size} CDRs or {seconds} s are held before Asterisk posts them (Mode: Batch)"
    cost = (
        f"Cdr events arrive up to {seconds} s late, and the batch held in memory is lost if Asterisk crashes"
    )
    return _warn(
        "CDR batch mode",
        f"{held}: {cost} ({shutdown})",
        f"set batch = no in {CDR_GENERAL}, then: asterisk -rx 'module reload cdr'",
    )


async def _ami_checks(settings: Settings) -> list[Check]:
    missing = [
        name.upper() for name in ("ami_host", "ami_username", "ami_password") if not getattr(settings, name)
    ]
    names = ["AMI reachable", "AMI TLS", "AMI login", *LOGGED_IN_CHECKS]
    if missing:
        unset = _fail("AMI reachable", f"{', '.join(missing)} not set", "set them in the environment or .env")
        return [unset, *_skipped(names[1:], f"needs {', '.join(missing)}")]
    where = f"{settings.ami_host}:{settings.ami_port}"
    try:
        session = await AmiSession.open(
            settings.ami_host,
            settings.ami_port,
            lambda headers: None,
            timeout_s=TIMEOUT_S,
            tls=settings.ami_tls_context,
            handshake_timeout_s=TIMEOUT_S,
            ca_file=settings.ami_tls_ca_file,
        )
    except HandshakeFailed as failed:
        if failed.during_tls:
            reachable = _ok("AMI reachable", f"{where} accepts TCP connections")
            tls = _fail("AMI TLS", str(failed), TLS_FIX)
            return [reachable, tls, *_skipped(names[2:], "needs a TLS session with AMI")]
        fix = f"check AMI_PORT (and AMI_TLS) against bindaddr/port and tlsbindaddr in {MANAGER_GENERAL}"
        return [_fail("AMI reachable", str(failed), fix), *_skipped(names[1:], "needs AMI's banner")]
    except (OSError, TimeoutError) as error:
        unreachable = _fail(
            "AMI reachable",
            f"cannot connect to {where}: {error or type(error).__name__}",
            f"check AMI_HOST/AMI_PORT, enabled = yes and bindaddr in {MANAGER_GENERAL}, and the "
            "firewall; asterisk -rx 'manager show settings'",
        )
        return [unreachable, *_skipped(names[1:], "needs a connection to AMI")]
    checks = [
        _ok("AMI reachable", f"{where} ({session.banner or 'no banner'})"),
        _tls_check(session, settings),
    ]
    try:
        checks += await _session_checks(session, settings)
    finally:
        await session.logoff(timeout_s=1.0)
    return checks


TLS_FIX = (
    f"compare AMI_TLS_CA_FILE and AMI_HOST with tlscertfile in {MANAGER_GENERAL} "
    "(openssl x509 -noout -subject -ext subjectAltName -enddate -in FILE)"
)


def _tls_check(session: AmiSession, settings: Settings) -> Check:
    state = session.tls
    if state is None:
        if settings.ami_host in LOOPBACK_HOSTS:
            return _ok("AMI TLS", "off (AMI_TLS=false): AMI is on this host, nothing crosses a network")
        return _warn(
            "AMI TLS",
            "off (AMI_TLS=false): the AMI password and every CDR cross the network in clear text",
            f"set tlsenable = yes in {MANAGER_GENERAL} (see README, AMI over TLS) and AMI_TLS=true",
        )
    if not state.verified:
        return _warn(
            "AMI TLS",
            f"{state.protocol}, certificate not verified (AMI_TLS_VERIFY=false)",
            "set AMI_TLS_CA_FILE to the CA of Asterisk's tlscertfile and AMI_TLS_VERIFY=true",
        )
    days = state.days_left() or 0.0
    expires = time.strftime("%Y-%m-%d", time.gmtime(state.not_after or 0))
    detail = f"{state.protocol}, certificate {state.subject} (issuer {state.issuer}), expires {expires}"
    if days < WARN_DAYS:
        return _warn("AMI TLS", f"{detail}: in {days:.0f} days", "renew Asterisk's tlscertfile soon")
    return _ok("AMI TLS", f"{detail} ({days:.0f} days)")


async def _session_checks(session: AmiSession, settings: Settings) -> list[Check]:
    password = settings.ami_password.get_secret_value() if settings.ami_password else ""
    try:
        await session.login(settings.ami_username, password, timeout_s=TIMEOUT_S)
    except LoginRefused as error:
        refused = _fail(
            "AMI login",
            f"user {settings.ami_username!r} refused: {error}",
            f"check AMI_USERNAME/AMI_PASSWORD against its secret and permit/deny in {MANAGER_USERS}, "
            "then: asterisk -rx 'manager reload'",
        )
        return [refused, *_skipped(LOGGED_IN_CHECKS, "needs AMI login")]
    except (TimeoutError, ConnectionError) as error:
        silent = _fail("AMI login", f"no answer to Login: {error or 'timeout'}", "check the AMI port")
        return [silent, *_skipped(LOGGED_IN_CHECKS, "needs AMI login")]
    checks = [_ok("AMI login", f"user {settings.ami_username!r} logged in")]
    checks.append(await _read_class_check(session, settings.ami_username))
    try:
        checks += cdr_status_checks(await session.command("cdr show status", TIMEOUT_S))
    except (TimeoutError, ConnectionError) as error:
        reason = f"could not run 'cdr show status': {error or 'timeout'}"
        fix = (
            f"add command to write= of [{settings.ami_username}] in {MANAGER_USERS}, "
            "then: asterisk -rx 'manager reload'"
        )
        checks += [
            _warn("CDR logging", reason, fix),
            *_skipped(LOGGED_IN_CHECKS[2:], "needs 'cdr show status'"),
        ]
    return checks


async def _read_class_check(session: AmiSession, username: str) -> Check:
    fix = f"add cdr to read= of [{username}] in {MANAGER_USERS}, then: asterisk -rx 'manager reload'"
    try:
        classes = read_classes(await session.command(f"manager show user {username}", TIMEOUT_S))
    except (TimeoutError, ConnectionError):
        classes = None
    if classes is None:
        return _warn(
            "AMI read class cdr",
            "could not read the user's permissions (needs write=command)",
            f"make sure read= of [{username}] in {MANAGER_USERS} includes cdr",
        )
    if "cdr" in classes or "all" in classes:
        return _ok("AMI read class cdr", f"read = {','.join(classes)}")
    return _fail("AMI read class cdr", f"read = {','.join(classes)}: Cdr events are not sent", fix)


async def _api_checks(settings: Settings) -> list[Check]:
    if settings.api_key is None:
        unset = _fail("API key", "API_KEY not set", "set API_KEY (sk_ followed by 32 letters or digits)")
        return [Check("API reachable", Status.SKIP, "needs API_KEY"), unset]
    async with ApiClient.from_settings(settings) as api:
        try:
            status = await api.health()
        except RetryLater as error:
            unreachable = _fail(
                "API reachable",
                f"{settings.api_url}/health: {error.detail}",
                "check network access to the API, REGION or API_BASE_URL, and any proxy",
            )
            return [unreachable, Check("API key", Status.SKIP, "needs the API")]
        if status != 200:
            answered = _fail(
                "API reachable", f"{settings.api_url}/health answered {status}", "check API_BASE_URL"
            )
            return [answered, Check("API key", Status.SKIP, "needs the API")]
        checks = [_ok("API reachable", f"{settings.api_url}/health answered 200")]
        checks.append(await _key_check(api))
    return checks


async def _key_check(api: ApiClient) -> Check:
    # An empty batch changes nothing on the API side but goes through authentication.
    try:
        await api.post_cdrs([])
    except AuthRefused as error:
        return _fail(
            "API key",
            f"refused ({error.detail})",
            "check API_KEY and REGION: a key only works in its own region",
        )
    except Rejected:
        pass  # authenticated: only the empty batch was refused
    except RetryLater as error:
        return _warn("API key", f"could not verify the key: {error.detail}")
    return _ok("API key", "accepted")


def _data_dir_check(data_dir: Path) -> Check:
    if not data_dir.is_dir():
        return _fail("DATA_DIR", f"{data_dir} does not exist", "create it or mount a volume there")
    if not os.access(data_dir, os.W_OK | os.X_OK):
        return _fail("DATA_DIR", f"{data_dir} is not writable (uid {os.getuid()})", "fix its owner or mode")
    free = shutil.disk_usage(data_dir).free
    free_text = f"{free / 1024**3:.1f} GiB free"
    if free < MIN_FREE_BYTES:
        return _fail("DATA_DIR", f"{data_dir} writable, only {free_text}", "free disk space")
    if free < LOW_FREE_BYTES:
        return _warn("DATA_DIR", f"{data_dir} writable, {free_text}", "free disk space soon")
    return _ok("DATA_DIR", f"{data_dir} writable, {free_text}")


def _recording_checks(settings: Settings) -> list[Check]:
    if not settings.recording_watcher_enabled:
        return [_warn("recordings", "RECORDING_WATCHER_ENABLED=false: recordings are not uploaded")]
    checks = []
    for raw_path in settings.recording_watch_paths:
        path = Path(raw_path)
        if not path.is_dir():
            checks.append(
                _fail(
                    "recording path",
                    f"{path} does not exist",
                    "mount the spool folder (/var/spool/asterisk, read-only) or fix RECORDING_WATCH_PATHS",
                )
            )
        elif not os.access(path, os.R_OK | os.X_OK):
            checks.append(_fail("recording path", f"{path} is not readable", "fix its permissions"))
        else:
            checks.append(_ok("recording path", f"{path} readable"))
    return checks


async def run_checks(settings: Settings) -> list[Check]:
    """Run every check; never stop at the first failure."""
    ami, api, database = await asyncio.gather(
        _ami_checks(settings), _api_checks(settings), database_checks(settings)
    )
    return [*ami, *api, _data_dir_check(settings.data_dir), *_recording_checks(settings), *database]


def render(checks: Sequence[Check], colour: bool) -> str:
    """The human report: one line per check, the fix indented below a failure."""
    lines = []
    for check in checks:
        symbol = SYMBOLS[check.status]
        if colour:
            symbol = f"{COLOURS[check.status]}{symbol}\033[0m"
        lines.append(f"{symbol} {check.name}: {check.detail}")
        if check.fix and check.status is not Status.OK:
            lines.append(f"    fix: {check.fix}")
    failed = sum(check.status is Status.FAIL for check in checks)
    warned = sum(check.status is Status.WARN for check in checks)
    skipped = sum(check.status is Status.SKIP for check in checks)
    lines.append(f"{len(checks)} checks: {failed} failed, {warned} warnings, {skipped} skipped")
    return "\n".join(lines)


def report(checks: Sequence[Check], as_json: bool) -> int:
    """Print the report; return the exit code (0 only when nothing failed)."""
    failed = any(check.status is Status.FAIL for check in checks)
    if as_json:
        print(json.dumps({"ok": not failed, "checks": [asdict(check) for check in checks]}, indent=2))
    else:
        print(render(checks, colour=sys.stdout.isatty()))
    return 1 if failed else 0
