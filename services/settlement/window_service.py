"""Service layer for windows and reads: close, list, reports and positions (settling a window is
``settle_service.py``: it moves money in the ledger)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from meshlib.errors import FailedPrecondition, NotFound
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size
from meshlib.storage import IdempotencyKey
from services.settlement.audit_records import audit_window
from services.settlement.domain.obligations import Position
from services.settlement.domain.participants import NetDebitCap, Participant
from services.settlement.domain.reports import SettlementReport, build_report
from services.settlement.domain.windows import SettlementWindow, WindowState, open_window
from services.settlement.position_service import current_open_window
from services.settlement.service_common import (
    WINDOW_PAIR_CODEC,
    SettlementTransactions,
    Viewer,
    new_id,
)
from services.settlement.unit_of_work import SettlementUnitOfWork

log = logging.getLogger("settlement.windows")


@dataclass(frozen=True)
class PositionView:
    """A participant's position in a currency, its cap and the currency's open window."""

    position: Position
    cap: NetDebitCap
    open_window_id: str | None

    @property
    def headroom_minor(self) -> int:
        """How much more it may reserve."""
        return self.position.headroom_minor(self.cap)


async def viewer_participant(uow: SettlementUnitOfWork, viewer: Viewer) -> Participant | None:
    """The participant whose figures a partner sees (None for operators and unregistered partners)."""
    if viewer.operator or not viewer.partner_id:
        return None
    return await uow.participants.by_registration_key(f"partner:{viewer.partner_id}")


class WindowService:
    """Settlement windows per currency and the reads partners and operators make."""

    def __init__(self, transactions: SettlementTransactions, id_factory: Callable[[], str] = new_id) -> None:
        self._tx = transactions
        self._new_id = id_factory

    async def close(
        self, key: IdempotencyKey, *, window_id: str | None = None, currency: str | None = None
    ) -> tuple[SettlementWindow, SettlementWindow]:
        """Close the OPEN window (named, or of a currency) and open the next, atomically."""

        async def operation(uow: SettlementUnitOfWork) -> tuple[SettlementWindow, SettlementWindow]:
            now = self._tx.clock()
            if window_id is not None:
                window = await uow.windows.get(window_id, for_update=True)
                if window is None:
                    raise NotFound("settlement window not found")
                if window.state is not WindowState.OPEN:
                    raise FailedPrecondition("the window is not open", reason="WINDOW_NOT_OPEN")
            else:
                assert currency is not None
                window = await current_open_window(uow, currency, now, lock="update", id_factory=self._new_id)
            # The lock is held: no commit can join the window any more, so its totals are final,
            # and every commit in it happened before this close time.
            now = max(now, self._tx.clock())
            closed = window.close(now)
            await uow.windows.update(closed)
            following = open_window(self._new_id(), window.currency, now)
            await uow.windows.add(following)
            audit_window(
                uow,
                "window.close",
                closed.id,
                closed.state.value,
                {
                    "currency": closed.currency,
                    "obligations": closed.obligation_count,
                    "gross_minor": closed.gross_minor,
                    "next_window": following.id,
                },
            )
            return closed, following

        closed, following = await self._tx.run(operation, key=key, codec=WINDOW_PAIR_CODEC)
        log.info(
            "settlement window closed",
            extra={
                "window": closed.id,
                "currency": closed.currency,
                "obligations": closed.obligation_count,
                "gross_minor": closed.gross_minor,
                "next_window": following.id,
            },
        )
        return closed, following

    async def get(self, window_id: str) -> SettlementWindow:
        """One window with its totals."""

        async def operation(uow: SettlementUnitOfWork) -> SettlementWindow:
            window = await uow.windows.get(window_id)
            if window is None:
                raise NotFound("settlement window not found")
            return window

        return await self._tx.read(operation)

    async def list(
        self,
        viewer: Viewer,
        *,
        currency: str | None,
        state: WindowState | None,
        requested_page_size: int,
        page_token: str,
    ) -> tuple[list[SettlementWindow], str]:
        """Windows newest first (totals cover every participant), and the next page token."""
        viewer.require_reader()
        limit = page_size(requested_page_size)
        filters = filter_fingerprint(currency=currency or "", state=state.value if state else "")
        cursor = decode_page_token(page_token, filters)
        before = cursor.get("seq") if cursor else None
        if cursor is not None and not isinstance(before, int):
            before = None

        async def operation(uow: SettlementUnitOfWork) -> list[tuple[int, SettlementWindow]]:
            return await uow.windows.page(currency, state, before, limit + 1)

        rows = await self._tx.read(operation)
        next_token = encode_page_token({"seq": rows[limit - 1][0]}, filters) if len(rows) > limit else ""
        return [window for _, window in rows[:limit]], next_token

    async def report(self, viewer: Viewer, window_id: str) -> SettlementReport:
        """The window's net settlement report; a partner sees its own row and bilateral entries."""
        viewer.require_reader()

        async def operation(uow: SettlementUnitOfWork) -> SettlementReport:
            window = await uow.windows.get(window_id)
            if window is None:
                raise NotFound("settlement window not found")
            report = build_report(window, await uow.obligations.in_window(window_id), self._tx.clock())
            if viewer.operator:
                return report
            own = await viewer_participant(uow, viewer)
            return report.for_participant(own.id if own else None)

        return await self._tx.read(operation)

    async def position(self, viewer: Viewer, participant_id: str, currency: str) -> PositionView:
        """A participant's position; NOT_FOUND for another partner's participant or no cap."""
        viewer.require_reader()

        async def operation(uow: SettlementUnitOfWork) -> PositionView:
            participant = await uow.participants.get(participant_id)
            if participant is None or not viewer.may_see(participant):
                raise NotFound("participant not found")
            cap = participant.cap_for(currency)
            if cap is None:
                raise NotFound("the participant has no net debit cap in this currency")
            position = await uow.positions.get(participant_id, currency) or Position(participant_id, currency)
            window = await uow.windows.open_window(currency)
            return PositionView(position, cap, window.id if window else None)

        return await self._tx.read(operation)
