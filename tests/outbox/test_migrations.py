"""Migrations: create, upgrade, no-op, refuse what is not ours; the result matches schema.py exactly."""

from __future__ import annotations

import asyncio
import hashlib
import re
import sqlite3
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import CheckConstraint, Column, MetaData, Text, create_engine, pool, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.schema import CreateIndex

from connector.errors import OutboxError
from connector.outbox import migrate
from connector.outbox.migrate import known_revisions, prepare_database
from connector.outbox.records import Kind
from connector.outbox.schema import metadata
from connector.outbox.store import Store
from tests.conftest import CliRunner, build_cdr


def digest(path: Path) -> str:
    """The file's bytes, hashed."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def revision_of(path: Path) -> str:
    """The schema revision written in the file."""
    with sqlite3.connect(path) as db:
        (version,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    db.close()
    return str(version)


def _normalized(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).replace("( ", "(").replace(" )", ")").strip()


def _check_constraints(table_sql: str) -> dict[str, str]:
    """Named CHECK constraints of a CREATE TABLE statement (balanced parentheses)."""
    found: dict[str, str] = {}
    for match in re.finditer(r"CONSTRAINT\s+(\w+)\s+CHECK\s*\(", table_sql):
        depth, start = 1, match.end()
        position = start
        while depth:
            depth += {"(": 1, ")": -1}.get(table_sql[position], 0)
            position += 1
        found[match.group(1)] = _normalized(table_sql[start : position - 1])
    return found


def _ddl(path: Path) -> dict[str, str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL").fetchall()
    db.close()
    return dict(rows)


def schema_differences(path: Path, expected: MetaData) -> list[str]:
    """Everything that differs between the database file and `expected`."""
    engine = create_engine(f"sqlite:///{path}", poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True}
            )
            # SQLAlchemy cannot reflect an expression index (ix_cdr_raw_recordingfile), so Alembic
            # skips it on both sides, saying so: the CREATE INDEX comparison below covers it.
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
                warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression")
                differences = [repr(diff) for diff in compare_metadata(context, expected)]
    finally:
        engine.dispose()
    ddl = _ddl(path)
    dialect = sqlite.dialect()
    wanted_indexes = {str(index.name) for table in expected.tables.values() for index in table.indexes}
    # Alembic skips expression indexes: one in the database only would go unseen.
    indexes = "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
    with sqlite3.connect(path) as db:
        extra = {name for (name,) in db.execute(indexes)} - wanted_indexes
    db.close()
    differences.extend(f"index {name}: not in schema.py" for name in sorted(extra))
    for table in expected.tables.values():
        # compare_metadata compares an index's columns but not a partial index's WHERE clause:
        # compare the whole CREATE INDEX statement instead.
        for index in table.indexes:
            wanted = _normalized(str(CreateIndex(index).compile(dialect=dialect)))
            if _normalized(ddl.get(str(index.name), "")) != wanted:
                differences.append(f"index {index.name}: database has {ddl.get(str(index.name))!r}")
        # compare_metadata ignores CHECK constraints altogether.
        wanted_checks = {
            str(constraint.name): _normalized(str(constraint.sqltext))
            for constraint in table.constraints
            if isinstance(constraint, CheckConstraint)
        }
        actual_checks = _check_constraints(ddl.get(table.name, ""))
        if actual_checks != wanted_checks:
            differences.append(f"checks of {table.name}: database {actual_checks}, schema {wanted_checks}")
    return differences


# -- creating and upgrading ---------------------------------------------------------------------


@pytest.mark.parametrize("initial", [None, b""], ids=["no-file", "empty-file"])
def test_missing_or_empty_file_is_migrated_to_head(outbox_path: Path, initial: bytes | None) -> None:
    if initial is not None:
        outbox_path.write_bytes(initial)
    prepare_database(outbox_path)
    assert revision_of(outbox_path) == known_revisions()[1]
    assert {"cdr", "recording", "backlog", "failed"} <= set(_ddl(outbox_path))


def test_the_fast_path_head_is_alembics_head() -> None:
    # prepare_database skips Alembic for files already at SCHEMA_HEAD: it must be the real head.
    assert migrate.SCHEMA_HEAD == known_revisions()[1]


def test_rerunning_is_a_no_op(outbox_path: Path, run_connector: CliRunner) -> None:
    prepare_database(outbox_path)
    before = digest(outbox_path)
    prepare_database(outbox_path)
    assert digest(outbox_path) == before
    env = {"DATA_DIR": str(outbox_path.parent)}
    first, second = run_connector("migrate", env=env), run_connector("migrate", env=env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    assert f"at schema {known_revisions()[1]}" in second.stdout
    assert digest(outbox_path) == before


async def test_upgrade_from_the_first_revision_keeps_rows(outbox_path: Path) -> None:
    engine = create_engine(f"sqlite:///{outbox_path}", poolclass=pool.NullPool)
    with engine.begin() as connection:
        config = migrate._alembic_config()
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    engine.dispose()
    assert revision_of(outbox_path) == "0001"
    with sqlite3.connect(outbox_path) as db:
        db.execute(
            "INSERT INTO cdr (received_at, dedupe_key, identity, uniqueid, raw, next_attempt_at, updated_at)"
            " VALUES ('2026-01-01T00:00:00Z', 'k#1', 'k', 'u', '[]', '2026-01-01T00:00:00Z', 'x')"
        )
    db.close()
    store = await Store.open(outbox_path)
    try:
        assert [row.dedupe_key for row in await store.due_cdrs(10)] == ["k#1"]
    finally:
        await store.close()
    assert revision_of(outbox_path) == known_revisions()[1]


def test_newer_schema_is_refused(outbox_path: Path, run_connector: CliRunner) -> None:
    prepare_database(outbox_path)
    with sqlite3.connect(outbox_path) as db:
        db.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    db.close()
    before = digest(outbox_path)
    with pytest.raises(OutboxError, match="9999_from_the_future, newer than this connector knows"):
        prepare_database(outbox_path)
    for command_name in ("status", "migrate"):
        result = run_connector(command_name, env={"DATA_DIR": str(outbox_path.parent)})
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1, result.stderr
        assert "newer than this connector knows" in result.stderr
        assert "upgrade the connector" in result.stderr
    assert digest(outbox_path) == before


_DIE_IN_MIGRATION = """
import os, signal, sys
from pathlib import Path
from alembic.operations import Operations
from connector.outbox.migrate import prepare_database

real_execute = Operations.execute

def execute(self, sql, *args, **kwargs):
    if "CREATE VIEW failed" in str(sql):  # the last statement of revision 0001
        os.kill(os.getpid(), signal.SIGKILL)
    return real_execute(self, sql, *args, **kwargs)

Operations.execute = execute
prepare_database(Path(sys.argv[1]))
"""


def test_a_crash_inside_the_first_migration_does_not_brick_the_file(outbox_path: Path) -> None:
    died = subprocess.run(
        [sys.executable, "-c", _DIE_IN_MIGRATION, str(outbox_path)], capture_output=True, check=False
    )
    assert died.returncode == -9, died.stderr
    prepare_database(outbox_path)
    assert revision_of(outbox_path) == known_revisions()[1]


# -- the migrated file is exactly schema.py -----------------------------------------------------


def test_migrated_database_matches_schema_py(outbox_path: Path) -> None:
    prepare_database(outbox_path)
    assert schema_differences(outbox_path, metadata) == []


def _other_partial_index(copy: MetaData) -> None:
    index = next(index for index in copy.tables["cdr"].indexes if index.name == "ix_cdr_pending")
    index.dialect_options["sqlite"]["where"] = text("state = 'failed'")


def _other_check(copy: MetaData) -> None:
    check = next(c for c in copy.tables["cdr"].constraints if isinstance(c, CheckConstraint))
    check.sqltext = text("state IN ('pending', 'sent')")


def _extra_column(copy: MetaData) -> None:
    copy.tables["cdr"].append_column(Column("extra", Text))


def _no_expression_index(copy: MetaData) -> None:
    table = copy.tables["cdr_raw"]
    table.indexes.discard(next(index for index in table.indexes if index.name == "ix_cdr_raw_recordingfile"))


@pytest.mark.parametrize("change", [_other_partial_index, _other_check, _extra_column, _no_expression_index])
def test_the_comparison_sees_each_kind_of_drift(
    outbox_path: Path, change: Callable[[MetaData], None]
) -> None:
    prepare_database(outbox_path)
    copy = MetaData()
    for table in metadata.tables.values():
        table.to_metadata(copy)
    change(copy)
    assert schema_differences(outbox_path, copy) != []


async def test_views_answer_plain_sqlite3(store: Store) -> None:
    await store.append_cdrs([build_cdr(n, received_at=f"2026-01-01T00:00:0{n}.000000Z") for n in range(4)])
    rows = await store.due_cdrs(3)
    await store.mark_sent(Kind.CDR, [rows[0].id])
    await store.mark_failed(Kind.CDR, {rows[1].id: "422 bad destination"})
    await store.mark_filtered(Kind.CDR, {rows[2].id: "zero duration"})
    with sqlite3.connect(store.path) as db:
        backlog = db.execute("SELECT kind, state, rows, oldest FROM backlog ORDER BY state").fetchall()
        failed = db.execute("SELECT id, kind, attempts, last_error FROM failed").fetchall()
    db.close()
    assert backlog == [
        ("cdr", "failed", 1, "2026-01-01T00:00:01.000000Z"),
        ("cdr", "filtered", 1, "2026-01-01T00:00:02.000000Z"),
        ("cdr", "pending", 1, "2026-01-01T00:00:03.000000Z"),
        ("cdr", "sent", 1, "2026-01-01T00:00:00.000000Z"),
    ]
    assert failed == [(rows[1].id, "cdr", 1, "422 bad destination")]


async def test_views_answer_the_sqlite3_shell(store: Store) -> None:
    shell = "/usr/bin/sqlite3"
    if not await asyncio.to_thread(Path(shell).exists):
        pytest.skip("no sqlite3 shell installed")
    await store.append_cdrs([build_cdr(1)])
    (row,) = await store.due_cdrs(1)
    await store.mark_failed(Kind.CDR, {row.id: "rejected"})
    query = "SELECT kind, state, rows FROM backlog; SELECT kind, last_error FROM failed;"
    result = await asyncio.to_thread(
        subprocess.run, [shell, str(store.path), query], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines() == ["cdr|failed|1", "cdr|rejected"]
