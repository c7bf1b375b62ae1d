"""Private MariaDB and PostgreSQL servers for the gap-recovery tests (and bench/db_backfill_bench.py).

Each server is Debian's own binary started on 127.0.0.1, on a free port, with its data in a
temporary folder, and stopped (folder removed) at the end: nothing is shared with a system
instance. `.ci/run` installs the packages when they are missing. Both accept passwords over TCP
(a wrong one is refused, as on a real site); the admin work goes over the server's own socket.

As root (CI, this machine), MariaDB runs with --user=root and PostgreSQL, which refuses root,
as the `postgres` user the Debian package creates.

No server outlives the test run: the session fixtures close them, `atexit` closes what is left after
Ctrl-C, and each server gets SIGTERM from the kernel when the Python process that started it dies
(even by SIGKILL), so a killed pytest leaves no orphan listening on a port.
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect

from connector.demo.ports import free_port

START_TIMEOUT_S = 60.0
INSTALL_HINT = "install it: apt-get install -y mariadb-server postgresql (what .ci/run does)"
READER, READER_SECRET = "connector", "reader-secret"
ADMIN, ADMIN_SECRET = "cdradmin", "admin-secret"


def _binary(*candidates: str) -> str:
    for pattern in candidates:
        found = sorted(glob.glob(pattern)) if "*" in pattern else [shutil.which(pattern) or ""]
        found = [path for path in found if path and os.access(path, os.X_OK)]
        if found:
            return found[-1]
    raise RuntimeError(f"{candidates[0]} not found: {INSTALL_HINT}")


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec, after Popen's setuid (a credential change would clear
    # it): the kernel sends SIGTERM to the server when the test process dies, however it dies.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _wait(ready: object, process: subprocess.Popen[bytes], log: Path, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited: {log.read_text(errors='replace')[-2000:]}")
        if ready():  # type: ignore[operator]
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:]
    raise RuntimeError(f"{what} did not start in {START_TIMEOUT_S:g} s: {tail}")


@dataclass
class DatabaseServer:
    """One private server: `start()`, `stop()` (same data, same port), `sql()` as its superuser."""

    kind: str  # "mariadb" or "postgres"
    folder: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def url(self, database: str, user: str = READER, secret: str = READER_SECRET) -> str:
        """The async SQLAlchemy URL the connector is given (CDR_BACKFILL_DB_URL)."""
        scheme = "mysql+asyncmy" if self.kind == "mariadb" else "postgresql+asyncpg"
        return f"{scheme}://{user}:{secret}@127.0.0.1:{self.port}/{database}"

    def admin_url(self, database: str) -> str:
        return self.url(database, ADMIN, ADMIN_SECRET)

    @property
    def dialect(self) -> Dialect:
        """SQLAlchemy's dialect for this server (to render literals and quote names)."""
        return mysql.dialect() if self.kind == "mariadb" else postgresql.dialect()

    def stop(self) -> None:
        """Shut the server down cleanly (SIGTERM) and wait; the data folder and port are kept."""
        if self.process is None:
            return
        if self.process.poll() is None:
            # PostgreSQL's SIGTERM waits for every client to leave; SIGINT (fast shutdown) drops them,
            # as a server going down under an open pool does. MariaDB's SIGTERM already does.
            self.process.send_signal(signal.SIGTERM if self.kind == "mariadb" else signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def start(self) -> None:
        """Start (again) on the same port and data folder; return once it answers queries."""
        (_start_mariadb if self.kind == "mariadb" else _start_postgres)(self)

    def sql(self, statements: str, database: str = "") -> str:
        """Run SQL as the superuser over the server's socket; return what the client printed."""
        if self.kind == "mariadb":
            command = [_binary("mariadb", "mysql"), "--no-defaults", "-S", str(self.folder / "sock")]
            command += ["-uroot", "-N", "-B", *([database] if database else [])]
            env = None
        else:
            command = [_binary("/usr/lib/postgresql/*/bin/psql", "psql"), "-h", str(self.folder), "-p"]
            command += [str(self.port), "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-qAt", "-F", "\t"]
            command += ["-P", "null=NULL"]  # print rows as `mariadb -N -B` does
            command += ["-d", database or "postgres"]
            env = {**os.environ, "PGCONNECT_TIMEOUT": "5"}
        result = subprocess.run(
            command, input=statements, capture_output=True, text=True, env=env, timeout=60
        )
        if result.returncode != 0:
            raise RuntimeError(f"{self.kind} SQL failed: {result.stderr.strip()}\n{statements[:500]}")
        return result.stdout

    def execute(
        self, statement: str, params: dict[str, Any] | None = None, database: str = ""
    ) -> list[tuple[str, ...]]:
        """Run one statement with `:name` parameters as the superuser; return the rows as text.

        SQLAlchemy renders the parameters as this server's literals (quotes, backslashes,
        datetimes), so no driver and no event loop is needed: it works inside an async test.
        Values come back as the client prints them, NULL as "NULL".
        """
        clause = sa.text(statement).bindparams(**(params or {}))
        rendered = str(clause.compile(dialect=self.dialect, compile_kwargs={"literal_binds": True}))
        output = self.sql(rendered.rstrip().rstrip(";") + ";", database)
        return [tuple(line.split("\t")) for line in output.splitlines()]

    def insert_rows(self, table: str, rows: list[dict[str, Any]], database: str) -> None:
        """Insert `rows` (column -> value) into `table`, one statement per row, as the superuser."""
        quote = self.dialect.identifier_preparer.quote
        for row in rows:
            names = ", ".join(quote(name) for name in row)
            values = ", ".join(f":p{index}" for index in range(len(row)))
            params = {f"p{index}": value for index, value in enumerate(row.values())}
            self.execute(f"INSERT INTO {quote(table)} ({names}) VALUES ({values})", params, database)

    def close(self) -> None:
        """Stop the server for good and remove its folder (safe to call twice)."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


# ---- MariaDB --------------------------------------------------------------------------------


def _start_mariadb(server: DatabaseServer) -> None:
    data, log = server.folder / "data", server.folder / "error.log"
    if not data.exists():
        install = _binary("mariadb-install-db", "mysql_install_db")
        subprocess.run(
            [install, "--no-defaults", "--user=root", f"--datadir={data}",
             "--auth-root-authentication-method=normal", "--skip-test-db"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
    daemon = _binary("mariadbd", "/usr/sbin/mariadbd", "mysqld", "/usr/sbin/mysqld")
    server.process = subprocess.Popen(
        [daemon, "--no-defaults", "--user=root", f"--datadir={data}", f"--socket={server.folder / 'sock'}",
         f"--port={server.port}", "--bind-address=127.0.0.1", "--skip-name-resolve", f"--log-error={log}",
         f"--pid-file={server.folder / 'pid'}", "--innodb-buffer-pool-size=64M", "--innodb-log-file-size=16M",
         "--innodb-flush-log-at-trx-commit=2", "--skip-log-bin", "--max-connections=200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )  # fmt: skip

    def ready() -> bool:
        try:
            server.sql("SELECT 1")
        except RuntimeError:
            return False
        return True

    log.touch()
    _wait(ready, server.process, log, "mariadbd")


def start_mariadb() -> DatabaseServer:
    server = DatabaseServer("mariadb", Path(tempfile.mkdtemp(prefix="connector-mariadb-")))
    atexit.register(server.close)  # after Ctrl-C, when the session fixture's finalizer did not run
    try:
        server.start()
        server.sql(
            f"CREATE USER '{ADMIN}'@'127.0.0.1' IDENTIFIED BY '{ADMIN_SECRET}';"
            f"GRANT ALL ON *.* TO '{ADMIN}'@'127.0.0.1';"
            f"CREATE USER '{READER}'@'127.0.0.1' IDENTIFIED BY '{READER_SECRET}';"
        )
    except BaseException:
        server.close()
        raise
    return server


# ---- PostgreSQL -----------------------------------------------------------------------------


def _as_postgres() -> dict[str, object]:
    """Run a PostgreSQL binary as `postgres` when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")
    return {"user": user.pw_uid, "group": user.pw_gid}


def _start_postgres(server: DatabaseServer) -> None:
    data, log = server.folder / "data", server.folder / "server.log"
    owner = _as_postgres()
    if owner:
        os.chown(server.folder, owner["user"], owner["group"])  # type: ignore[arg-type]
    if not data.exists():
        initdb = _binary("/usr/lib/postgresql/*/bin/initdb", "initdb")
        subprocess.run(
            [initdb, "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
             "-E", "UTF8", "--locale=C.UTF-8"],
            check=True, capture_output=True, timeout=120, **owner,  # type: ignore[arg-type]
        )  # fmt: skip
    postgres = _binary("/usr/lib/postgresql/*/bin/postgres", "postgres")
    with log.open("ab") as sink:
        server.process = subprocess.Popen(
            [postgres, "-D", str(data), "-p", str(server.port), "-h", "127.0.0.1", "-k", str(server.folder),
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "shared_buffers=64MB", "-c", "max_connections=100"],
            stdout=sink, stderr=sink, preexec_fn=_die_with_parent, **owner,  # type: ignore[arg-type]
        )  # fmt: skip

    def ready() -> bool:
        try:
            server.sql("SELECT 1")
        except RuntimeError:
            return False
        return True

    _wait(ready, server.process, log, "postgres")


def start_postgres() -> DatabaseServer:
    server = DatabaseServer("postgres", Path(tempfile.mkdtemp(prefix="connector-postgres-")))
    atexit.register(server.close)  # after Ctrl-C, when the session fixture's finalizer did not run
    try:
        server.start()
        server.sql(
            f"CREATE ROLE {ADMIN} LOGIN SUPERUSER PASSWORD '{ADMIN_SECRET}';"
            f"CREATE ROLE {READER} LOGIN PASSWORD '{READER_SECRET}';"
        )
    except BaseException:
        server.close()
        raise
    return server


# ---- the two cdr tables, as FreePBX and Asterisk create them ----------------------------------

SCHEMAS = Path(__file__).parent / "fixtures" / "db"


def create_database(server: DatabaseServer, name: str, schema: str | None) -> None:
    """A new database `name` with the `cdr` table of `schema` (freepbx | pgsql) and the reader's
    read-only grant on it, exactly as README tells a site to give it."""
    if server.kind == "mariadb":
        server.sql(f"CREATE DATABASE {name} DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;")
        if schema:
            server.sql((SCHEMAS / f"{schema}_cdr.sql").read_text(), name)
            server.sql(f"GRANT SELECT ON {name}.cdr TO '{READER}'@'127.0.0.1';")
    else:
        server.sql(f"CREATE DATABASE {name};")
        if schema:
            server.sql((SCHEMAS / f"{schema}_cdr.sql").read_text(), name)
            server.sql(f"GRANT SELECT ON cdr TO {READER};", name)
