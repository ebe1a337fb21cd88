"""Flat rows (one dict per record) as the CLI, the API and the dashboard write them."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO


def column_union(rows: Iterable[Iterable[str]]) -> list[str]:
    """Every key of `rows` (dicts, or any iterables of names), in order of first use: the
    header that holds rows whose keys differ, e.g. trials with different parameters."""
    return list(dict.fromkeys(key for row in rows for key in row))


def write_csv(
    f: TextIO,
    rows: Sequence[Mapping[str, Any]],
    header: Sequence[str] | None = None,
    *,
    header_line: bool = True,
) -> None:
    """`rows` as CSV under `header` (default: their `column_union`), after a header line
    unless `header_line` is false. Keys outside `header` are left out; missing ones are empty."""
    fields = list(header) if header is not None else column_union(rows)
    writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
    if header_line:
        writer.writeheader()
    writer.writerows(rows)
