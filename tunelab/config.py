"""Where tunelab keeps its data and which database and Ray cluster it talks to.

Every setting comes from an explicit argument first, then an environment variable,
then a default that needs no server: a SQLite file in the user's data directory
and a Ray instance started on this machine.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import platformdirs

ENV_DB_URL = "TUNELAB_DB_URL"
ENV_DATA_DIR = "TUNELAB_DATA_DIR"
ENV_RAY_ADDRESS = "RAY_ADDRESS"


def data_dir(*, create: bool = True) -> Path:
    """The directory holding the default database and driver logs (created on demand)."""
    path = Path(os.environ.get(ENV_DATA_DIR) or platformdirs.user_data_dir("tunelab"))
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def default_db_url() -> str:
    """The embedded default database: a SQLite file in the data directory."""
    return f"sqlite:///{data_dir() / 'tunelab.db'}"


def resolve_db_url(url: str | None = None) -> str:
    """`url` if given, else `TUNELAB_DB_URL`, else the embedded SQLite default."""
    return url or os.environ.get(ENV_DB_URL) or default_db_url()


# scheme://user:password@ as SQLAlchemy's URL parser reads it (the password runs to the
# first @ and may hold a /).
_PASSWORD = re.compile(r"^([\w+]+://[^:/]*):[^@]*@")


def redact_url(url: str) -> str:
    """`url` with its password shown as `***`, as `tunelab.schema.db.redact` does, for the
    commands that print a URL without loading SQLAlchemy."""
    return _PASSWORD.sub(r"\1:***@", url, count=1)


def resolve_ray_address(address: str | None = None) -> str | None:
    """`address` if given, else `RAY_ADDRESS`; None means start a local Ray."""
    return address or os.environ.get(ENV_RAY_ADDRESS) or None


def logs_dir(*, create: bool = True) -> Path:
    """Where background drivers write their logs (one folder per database)."""
    path = data_dir(create=create) / "logs"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
