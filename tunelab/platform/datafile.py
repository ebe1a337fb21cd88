"""Stored bytes that are data, never code: a JSON header and named binary sections.

Whatever the database or an artifact holds (checkpoints, policies, trajectories, build
bundles) is read back as data: this format, JSON, tensors through
`torch.load(weights_only=True)` or arrays through `np.load(allow_pickle=False)`. Never a
pickle: unpickling runs whatever code the bytes name, so anyone able to write the
database could run code as whoever reads them (tests/test_no_code_from_data.py greps the
package for it).

Layout: `MAGIC`, the kind's tag and a newline, 8 bytes of big-endian header length, the
header (UTF-8 JSON: {"meta": ..., "sections": [[name, size], ...]}), then the sections'
bytes in order.
"""

from __future__ import annotations

import json
import struct
from typing import Any

MAGIC = b"TUNELAB-DATA/1 "
_LEN = struct.Struct(">Q")
# Pickle streams open with PROTO (0x80) then the protocol number (2 to 5).
_PICKLE_PROTOCOLS = {bytes([0x80, p]) for p in range(2, 6)}


class DataFormatError(ValueError):
    """Stored bytes are not the data they should be (nothing of them was run)."""


def looks_pickled(data: bytes) -> bool:
    """Whether the bytes start like a pickle (what older versions stored)."""
    return bytes(data[:2]) in _PICKLE_PROTOCOLS


def pack(tag: str, meta: dict[str, Any], sections: dict[str, bytes] | None = None) -> bytes:
    """`meta` (JSON) and binary `sections` as one `tag` document."""
    if not tag or "\n" in tag:
        raise ValueError(f"bad tag {tag!r}")
    sections = sections or {}
    header = json.dumps(
        {"meta": meta, "sections": [[k, len(v)] for k, v in sections.items()]},
        allow_nan=False,
        separators=(",", ":"),
    ).encode()
    parts = [MAGIC, tag.encode(), b"\n", _LEN.pack(len(header)), header]
    parts += [bytes(v) for v in sections.values()]
    return b"".join(parts)


def unpack(tag: str, data: bytes, what: str = "data") -> tuple[dict[str, Any], dict[str, bytes]]:
    """(meta, sections) of a `tag` document; DataFormatError naming `what` otherwise
    (an older, pickled `what` is refused as such: it is never unpickled)."""
    data = bytes(data)
    if looks_pickled(data):
        raise DataFormatError(
            f"{what} is a pickle (an older format): refused, since unpickling stored bytes "
            "can run any code; it was not loaded"
        )
    head = MAGIC + tag.encode() + b"\n"
    if not data.startswith(head):
        raise DataFormatError(f"{what} is not a {tag!r} document (bad header)")
    at = len(head)
    try:
        (n,) = _LEN.unpack_from(data, at)
        at += _LEN.size
        header = json.loads(data[at : at + n])
        at += n
        meta, sections = header["meta"], {}
        for name, size in header["sections"]:
            if not isinstance(size, int) or size < 0 or at + size > len(data):
                raise DataFormatError(f"{what}: section {name!r} is truncated")
            sections[str(name)] = data[at : at + size]
            at += size
    except DataFormatError:
        raise
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise DataFormatError(f"{what}: a corrupt header ({exc})") from None
    if at != len(data) or not isinstance(meta, dict):
        raise DataFormatError(f"{what}: {len(data) - at} stray bytes after its sections")
    return meta, sections
