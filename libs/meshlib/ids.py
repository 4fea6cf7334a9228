"""Identifiers the mesh mints for new rows.

New ids are time-ordered (UUIDv7, RFC 9562), as TigerBeetle recommends for ledger ids: rows
created together sit together at the right edge of every B-tree index keyed by id, so a batch
of inserts touches a few index pages instead of one random page per row.
"""

from __future__ import annotations

import os
import time

_MASK_48 = (1 << 48) - 1
_MASK_62 = (1 << 62) - 1


def time_ordered_id() -> str:
    """A new UUIDv7 as 32 lowercase hex digits: milliseconds since the epoch, then 74 random bits."""
    millis = time.time_ns() // 1_000_000
    random = int.from_bytes(os.urandom(10), "big")
    value = (
        (millis & _MASK_48) << 80
        | 0x7 << 76  # version 7
        | ((random >> 62) & 0xFFF) << 64  # rand_a
        | 0b10 << 62  # variant
        | (random & _MASK_62)  # rand_b
    )
    return f"{value:032x}"
