"""Closing settlement windows on a schedule (Mojaloop's timed window close).

Every replica may run the schedule: each close carries a request id derived from the time
slot, so the first replica closes the window and the others get the same answer replayed
(never two closes for one slot).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from meshlib.storage import IdempotencyKey
from services.settlement.window_service import WindowService

log = logging.getLogger("services.settlement")


async def close_due_windows(
    windows: WindowService,
    currencies: Iterable[str],
    interval_seconds: float,
    clock: Callable[[], float] = time.time,
) -> list[str]:
    """Close the OPEN window of each currency once per ``interval_seconds`` slot; returns the
    closed windows' ids (the same ids again for a slot that was already closed)."""
    slot = int(clock() // interval_seconds)
    closed_ids: list[str] = []
    for currency in currencies:
        key = IdempotencyKey(
            scope="settlement-scheduler",
            method="CloseSettlementWindow",
            request_id=f"scheduled-close-{currency}-{slot}",
            fingerprint=f"close:{currency}:{slot}",
        )
        closed, following = await windows.close(key, currency=currency)
        closed_ids.append(closed.id)
        log.info(
            "scheduled window close", extra={"window": closed.id, "currency": currency, "next_window": following.id}
        )
    return closed_ids
