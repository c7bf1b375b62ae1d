"""Alembic environment: migrates the outbox database.

The runtime (connector/outbox/migrate.py) passes an open connection in `config.attributes`; the
`alembic` command line uses `sqlalchemy.url` from alembic.ini, or `-x db=PATH`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from connector.outbox.schema import metadata

config = context.config


def _url() -> str:
    path = context.get_x_argument(as_dictionary=True).get("db")
    return f"sqlite:///{path}" if path else config.get_main_option("sqlalchemy.url") or ""


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as own_connection:
        context.configure(connection=own_connection, target_metadata=metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
