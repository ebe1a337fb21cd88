"""Whether a database's schema is current, without loading Alembic (which costs a command
line more than its whole query): the head revision read from the migration scripts."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

VERSIONS = Path(__file__).parent / "migrations" / "versions"
_ASSIGN = re.compile(r'^(down_revision|revision)\s*(?::[^=]*)?=\s*(?:"([^"]*)"|None)\s*$', re.M)


@functools.cache
def head_revision() -> str | None:
    """The one revision no migration script revises; None where that cannot be told
    this simply (branches, a script written another way): ask Alembic then."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for script in VERSIONS.glob("*.py"):
        found = {name: value for name, value in _ASSIGN.findall(script.read_text())}
        if "revision" not in found or "down_revision" not in found:
            return None
        revisions.add(found["revision"])
        if found["down_revision"]:
            revised.add(found["down_revision"])
    heads = revisions - revised
    return heads.pop() if len(heads) == 1 else None


def at_head(engine: Any) -> bool:
    """Whether `engine`'s database is at the head revision (False if it cannot be told)."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    head = head_revision()
    if head is None:
        return False
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars()
            return list(versions) == [head]
    except DBAPIError:  # no alembic_version table: a new database
        return False
