"""Settlement windows per currency (Mojaloop's model): OPEN -> CLOSED -> SETTLED.

Exactly one window per currency is OPEN; closing it opens the next in the same
transaction, and a committed obligation joins the window that is OPEN when it commits.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, replace

from meshlib.errors import FailedPrecondition


class WindowState(enum.Enum):
    """Where a window is in its life."""

    OPEN = "OPEN"
    CLOSED = "CLOSED"
    SETTLED = "SETTLED"


@dataclass(frozen=True)
class SettlementWindow:
    """A settlement window of one currency (totals are computed from its obligations)."""

    id: str
    currency: str
    state: WindowState
    opened_at: dt.datetime
    closed_at: dt.datetime | None = None
    settled_at: dt.datetime | None = None
    settlement_reference: str = ""
    obligation_count: int = 0
    gross_minor: int = 0

    def close(self, now: dt.datetime) -> SettlementWindow:
        """CLOSED; only the OPEN window can be closed (WINDOW_NOT_OPEN otherwise)."""
        if self.state is not WindowState.OPEN:
            raise FailedPrecondition("the window is not open", reason="WINDOW_NOT_OPEN")
        return replace(self, state=WindowState.CLOSED, closed_at=now)

    def require_settleable(self) -> None:
        """Only a CLOSED window settles: an OPEN one fails WINDOW_NOT_CLOSED, a SETTLED one
        WINDOW_ALREADY_SETTLED."""
        if self.state is WindowState.OPEN:
            raise FailedPrecondition("the window is still open; close it first", reason="WINDOW_NOT_CLOSED")
        if self.state is WindowState.SETTLED:
            raise FailedPrecondition("the window was already settled", reason="WINDOW_ALREADY_SETTLED")

    def settle(self, now: dt.datetime, reference: str = "") -> SettlementWindow:
        """SETTLED (:meth:`require_settleable` first)."""
        self.require_settleable()
        return replace(self, state=WindowState.SETTLED, settled_at=now, settlement_reference=reference)


def open_window(window_id: str, currency: str, now: dt.datetime) -> SettlementWindow:
    """A new, empty OPEN window."""
    return SettlementWindow(id=window_id, currency=currency, state=WindowState.OPEN, opened_at=now)
