"""Alembic environment: runs on the connection (or engine) tunelab hands over in
`config.attributes`."""

from alembic import context
from sqlalchemy import Connection, create_engine

from tunelab.schema.models import Base

config = context.config
target_metadata = Base.metadata


def _migrate(connection: Connection) -> None:
    with connection.begin():
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        context.run_migrations()


def _run(connection: Connection) -> None:
    if connection.dialect.name != "sqlite":
        _migrate(connection)
        return
    # Batch migrations re-create tables; with foreign keys on, dropping `jobs` would
    # cascade to every trial. The pragma is ignored inside a transaction: set it first.
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    connection.commit()
    try:
        _migrate(connection)
    finally:
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
        connection.commit()


def run_migrations_online() -> None:
    # tunelab.schema.db.upgrade hands over a connection that holds the migration lock.
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = config.attributes.get("engine")
    if engine is None:  # plain `alembic` command line: URL from the ini file
        engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        _run(connection)


run_migrations_online()
