"""Create or update the read-only PostgreSQL role the dashboard connects as (run by the
compose file's `migrate` service after `tunelab db upgrade`, on every start, so that a
database made before this role existed gets it too).

TUNELAB_DB_URL: the owner's URL (the role that migrates); TUNELAB_READER_USER (default
tunelab_reader) and TUNELAB_READER_PASSWORD: the role. It may connect and SELECT from every
table of the public schema, those of later migrations included, and nothing else.
"""

from __future__ import annotations

import os

import psycopg
from psycopg import sql


def main() -> None:
    """Grant the reader role what the dashboard needs, and only that."""
    url = os.environ["TUNELAB_DB_URL"].replace("postgresql+psycopg://", "postgresql://", 1)
    name = os.environ.get("TUNELAB_READER_USER") or "tunelab_reader"
    role = sql.Identifier(name)
    password = sql.Literal(os.environ["TUNELAB_READER_PASSWORD"])
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
        verb = sql.SQL("ALTER" if exists else "CREATE")
        conn.execute(
            sql.SQL(
                "{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD {}"
            ).format(verb, role, password)
        )
        db = sql.Identifier(conn.info.dbname)
        for stmt in (
            "GRANT CONNECT ON DATABASE {db} TO {role}",
            "GRANT USAGE ON SCHEMA public TO {role}",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}",
            # Tables a later migration creates (they belong to this, the migrating, role).
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {role}",
        ):
            conn.execute(sql.SQL(stmt).format(db=db, role=role))
    print(f"read-only role {name} is set up")


if __name__ == "__main__":
    main()
