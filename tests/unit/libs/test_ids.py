"""Time-ordered ids: valid UUIDv7, unique, and sorted by creation time across milliseconds."""

from __future__ import annotations

import time
import uuid

from meshlib.ids import time_ordered_id


def test_ids_are_version_7_uuids_in_hex() -> None:
    parsed = uuid.UUID(hex=time_ordered_id())
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_ids_carry_the_time_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    value = int(time_ordered_id(), 16)
    after = time.time_ns() // 1_000_000
    assert before <= value >> 80 <= after


def test_ids_made_in_later_milliseconds_sort_after_earlier_ones() -> None:
    first = time_ordered_id()
    time.sleep(0.002)
    second = time_ordered_id()
    assert first < second


def test_ids_are_unique() -> None:
    made = [time_ordered_id() for _ in range(10_000)]
    assert len(set(made)) == len(made)
