"""Paths a command writes its output to (`-o/--output`, `--out`): what may be replaced.

Output is written beside its place and moved over it, so replacing (`--overwrite`,
`--force`) swaps one directory entry for another. That is only ever done to a regular
file (or a symlink to one, or a dangling one: the link itself is replaced): a device
such as /dev/full, a directory, a FIFO or a socket, directly or through a symlink, is
refused before anything is written.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


class NotRegularFile(OSError):
    """An output path names something other than a regular file: it is never replaced."""


def check_replaceable(path: str | Path) -> None:
    """Raise NotRegularFile if `path` exists as (or links to) anything but a regular file."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode  # through a symlink: what it points at
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:  # e.g. a symlink loop
        raise NotRegularFile(f"{path}: {exc.strerror or exc}; not replaced") from None
    if stat.S_ISREG(mode):
        return
    what = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    via = " (through a symlink)" if path.is_symlink() else ""
    raise NotRegularFile(f"{path} is {what}{via}: only a regular file is replaced")
