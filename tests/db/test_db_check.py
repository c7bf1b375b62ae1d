"""`connector check`'s CDR database lines against the real servers."""

from __future__ import annotations

from pathlib import Path

from connector.backfill.db_check import database_checks
from connector.check import Status
from connector.config import load_settings
from tests.cdr.helpers import paired_ami
from tests.db.conftest import CdrDatabase
from tests.db.rows import insert


def settings(data_dir: Path, url: str) -> object:
    return load_settings(data_dir=str(data_dir), cdr_backfill_db_url=url, asterisk_tz="UTC")


async def test_a_table_with_rows_passes_and_cdr_pgsql_wants_its_end_index(
    data_dir: Path, cdr_db: CdrDatabase
) -> None:
    insert(cdr_db, paired_ami())
    table, index = await database_checks(settings(data_dir, cdr_db.url))  # type: ignore[arg-type]
    assert (
        table.name == "CDR database" and "newest row" in table.detail and "reader-secret" not in table.detail
    )
    if cdr_db.schema == "freepbx":
        assert index.status is Status.OK
        return
    assert index.status is Status.WARN and 'CREATE INDEX cdr_end_idx ON cdr ("end")' in index.fix
    cdr_db.sql('CREATE INDEX cdr_end_idx ON cdr ("end");')
    _, index = await database_checks(settings(data_dir, cdr_db.url))  # type: ignore[arg-type]
    assert index.status is Status.OK


async def test_a_refused_login_fails_on_one_line_and_skips_the_index(
    data_dir: Path, cdr_db: CdrDatabase
) -> None:
    table, index = await database_checks(settings(data_dir, cdr_db.wrong_password_url))  # type: ignore[arg-type]
    assert table.status is Status.FAIL and "\n" not in table.detail
    assert "not-the-secret" not in table.detail + table.fix and "***" in table.detail
    assert index.status is Status.SKIP
