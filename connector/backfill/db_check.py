"""`connector check`'s look at the CDR database (CDR_BACKFILL_DB_URL): the connection, the table and
the columns recovery needs, the age of its newest row, and on PostgreSQL the index of `end`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from connector.cdr.db_rows import local_time
from connector.cdr.times import resolve_zone

if TYPE_CHECKING:
    from connector.check import Check
    from connector.config import Settings

NAMES = ("CDR database", "CDR database index")
STALE_S = 24 * 3600  # a table with no row for a day: is Asterisk still writing it?


def _age(newest: datetime | None, now: datetime) -> str:
    if newest is None:
        return "the table is empty"
    seconds = max(0.0, (now - newest).total_seconds())
    if seconds < 120:
        return f"newest row {seconds:.0f} s old"
    if seconds < 2 * 3600:
        return f"newest row {seconds / 60:.0f} min old"
    return f"newest row {seconds / 3600:.1f} h old"


async def database_checks(settings: Settings) -> list[Check]:
    """The two database checks; both `skip` when CDR_BACKFILL_DB_URL is not set."""
    from connector.check import Check, Status

    url = settings.cdr_backfill_db_url.get_secret_value()
    if not url:
        return [Check(name, Status.SKIP, "CDR_BACKFILL_DB_URL not set") for name in NAMES]
    # Imported only when the setting is used: SQLAlchemy and a driver.
    from connector.backfill import database
    from connector.backfill.db_follower import describe_error

    table, zone = settings.cdr_backfill_db_table, resolve_zone(settings.asterisk_tz)
    shown = database.shown_url(url)
    engine = database.open_engine(url)
    try:
        async with engine.connect() as connection:
            layout = await database.read_layout(connection, table)
            newest = local_time(await database.newest(connection, layout), zone)
            indexed = await database.end_indexed(connection, layout)
    except Exception as error:  # every failure is a line of the report, never a traceback
        fix = (
            "check CDR_BACKFILL_DB_URL (host, port, user, password, database) and that the user may "
            f"SELECT on {table}; see README, Gap recovery from the CDR database"
        )
        failed = Check(NAMES[0], Status.FAIL, f"{shown}: {describe_error(error, table)}", fix)
        return [failed, Check(NAMES[1], Status.SKIP, "needs the CDR database")]
    finally:
        await engine.dispose()
    if layout.missing:
        missing = ", ".join(layout.missing)
        fix = "point CDR_BACKFILL_DB_TABLE at Asterisk's CDR table (FreePBX: cdr in asteriskcdrdb)"
        lacking = Check(NAMES[0], Status.FAIL, f"{shown} table {table} lacks {missing}", fix)
        return [lacking, Check(NAMES[1], Status.SKIP, "needs the CDR table")]
    now = datetime.now(zone).replace(tzinfo=None)
    kind = "answer/end columns" if layout.has_end else "calldate + duration (no end column)"
    detail = f"{shown} table {table}: {kind}, {_age(newest, now)}"
    stale = newest is None or (now - newest).total_seconds() > STALE_S
    first = Check(NAMES[0], Status.WARN if stale else Status.OK, detail)
    if stale:
        first = Check(NAMES[0], Status.WARN, detail, "is Asterisk writing CDRs to this table?")
    if indexed is None:
        index = Check(NAMES[1], Status.OK, f"reads use the {layout.start} index (FreePBX's table has it)")
        if layout.dialect == "postgresql":
            index = Check(NAMES[1], Status.OK, f"no end column: reads filter on {layout.start}")
    elif indexed:
        index = Check(NAMES[1], Status.OK, f'an index of {table} starts with "end"')
    else:
        index = Check(
            NAMES[1],
            Status.WARN,
            f'no index of {table} starts with "end": every poll reads the whole table',
            f'CREATE INDEX cdr_end_idx ON {table} ("end");',
        )
    return [first, index]
