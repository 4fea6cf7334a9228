"""Service layer for obligations: reserve, commit, release (the payment saga's calls).

Every call is idempotent twice over: by request_id (a replay returns the first answer) and
by payment (the obligation id is the payment id).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from meshlib.errors import InvalidArgument, NotFound
from meshlib.money import Amount
from meshlib.storage import IdempotencyKey
from services.settlement.audit_records import audit_obligation
from services.settlement.domain.obligations import Obligation, ObligationState, Position
from services.settlement.domain.participants import NetDebitCap, parties
from services.settlement.domain.windows import SettlementWindow, open_window
from services.settlement.service_common import OBLIGATION_CODEC, SettlementTransactions, new_id
from services.settlement.unit_of_work import SettlementUnitOfWork

log = logging.getLogger("settlement.positions")

# Enough rounds to get past a concurrent close that replaced the window we waited on.
OPEN_WINDOW_ATTEMPTS = 5


async def current_open_window(
    uow: SettlementUnitOfWork,
    currency: str,
    now: dt.datetime,
    *,
    lock: str,
    id_factory: Callable[[], str] = new_id,
    totals: bool = True,
) -> SettlementWindow:
    """The OPEN window of ``currency``, locked (``share`` for commits, ``update`` for a close),
    opened on first use; ``totals=False`` leaves its count and gross at 0 (no aggregate query).

    On PostgreSQL a commit waiting on a closing window finds it CLOSED once the close is done;
    the next statement then sees the window the close opened.
    """
    for _ in range(OPEN_WINDOW_ATTEMPTS):
        window = await uow.windows.open_window(currency, lock=lock, totals=totals)
        if window is not None:
            return window
        await uow.windows.add_open_if_absent(open_window(id_factory(), currency, now))
    raise RuntimeError(f"no open window could be found or opened for {currency}")


def warn_if_near_cap(position: Position, cap: NetDebitCap | None) -> None:
    """Log a warning when a payer's exposure reached its cap's alarm level."""
    if cap is not None and position.exposure_minor >= cap.alarm_level():
        log.warning(
            "participant near its net debit cap",
            extra={
                "participant": position.participant_id,
                "currency": position.currency,
                "exposure_minor": position.exposure_minor,
                "cap_minor": cap.cap_minor,
            },
        )


class PositionService:
    """Reserve / commit / release obligations and move positions accordingly."""

    def __init__(self, transactions: SettlementTransactions, id_factory: Callable[[], str] = new_id) -> None:
        self._tx = transactions
        self._new_id = id_factory

    async def reserve(
        self,
        key: IdempotencyKey,
        payment_id: str,
        payer_id: str,
        payee_id: str,
        amount: Amount,
        kind: str = "PAYMENT",
    ) -> Obligation:
        """Reserve ``amount`` against the payer's net debit cap for a payment."""
        if payer_id == payee_id:
            raise InvalidArgument.field("payee", "must differ from payer")

        async def operation(uow: SettlementUnitOfWork) -> Obligation:
            now = self._tx.clock()
            existing = await uow.obligations.get(payment_id, for_update=True)
            if existing is not None:
                return existing.reserved_again(payer_id, payee_id, amount.currency, amount.minor_units, kind)
            payer, _ = parties(await uow.participants.get_many((payer_id, payee_id)), payer_id, payee_id)
            positions = await uow.positions.lock(amount.currency, [payer_id, payee_id])
            cap = payer.cap_for(amount.currency)
            reserved = positions[payer_id].reserve(amount.minor_units, cap, now)
            await uow.positions.save(reserved)
            obligation = Obligation.reserved(
                payment_id, payer_id, payee_id, amount.currency, amount.minor_units, now, kind
            )
            await uow.obligations.add(obligation)
            audit_obligation(uow, "obligation.reserve", obligation)
            warn_if_near_cap(reserved, cap)
            return obligation

        return await self._tx.run(operation, key=key, codec=OBLIGATION_CODEC)

    async def commit(self, key: IdempotencyKey, obligation_id: str) -> Obligation:
        """Commit a reserved obligation into the currency's OPEN window (same transaction)."""

        async def operation(uow: SettlementUnitOfWork) -> Obligation:
            now = self._tx.clock()
            obligation = await self._locked(uow, obligation_id)
            if obligation.state is ObligationState.COMMITTED:
                return obligation
            if obligation.state is ObligationState.RELEASED:
                obligation.commit("", now)  # raises OBLIGATION_ALREADY_RELEASED
            # The reservation created both positions: lock them, nothing to insert.
            positions = await uow.positions.lock(
                obligation.currency, [obligation.payer_id, obligation.payee_id], create=False
            )
            # Read under a share lock: a concurrent close waits for us, or we see its next window.
            # Only its id is needed: no totals.
            window = await current_open_window(
                uow, obligation.currency, now, lock="share", id_factory=self._new_id, totals=False
            )
            # Stamp after the locks: the commit time then falls inside the window's open period.
            now = max(now, self._tx.clock())
            committed, payer, payee = obligation.commit_moving(
                positions[obligation.payer_id], positions[obligation.payee_id], window.id, now
            )
            await uow.positions.save_many([payer, payee])
            await uow.obligations.update(committed)
            audit_obligation(uow, "obligation.commit", committed)
            return committed

        return await self._tx.run(operation, key=key, codec=OBLIGATION_CODEC)

    async def release(self, key: IdempotencyKey, obligation_id: str) -> Obligation:
        """Give a reserved obligation's reservation back to the payer."""

        async def operation(uow: SettlementUnitOfWork) -> Obligation:
            now = self._tx.clock()
            obligation = await self._locked(uow, obligation_id)
            released = obligation.release(now)  # raises OBLIGATION_ALREADY_COMMITTED
            if released is obligation:
                return obligation
            positions = await uow.positions.lock(
                obligation.currency, [obligation.payer_id, obligation.payee_id], create=False
            )
            await uow.positions.save(positions[obligation.payer_id].release(obligation.amount_minor, now))
            await uow.obligations.update(released)
            audit_obligation(uow, "obligation.release", released)
            return released

        return await self._tx.run(operation, key=key, codec=OBLIGATION_CODEC)

    async def get(self, obligation_id: str) -> Obligation:
        """One obligation; NOT_FOUND if unknown."""

        async def operation(uow: SettlementUnitOfWork) -> Obligation:
            obligation = await uow.obligations.get(obligation_id)
            if obligation is None:
                raise NotFound("obligation not found")
            return obligation

        return await self._tx.read(operation)

    @staticmethod
    async def _locked(uow: SettlementUnitOfWork, obligation_id: str) -> Obligation:
        obligation = await uow.obligations.get(obligation_id, for_update=True)
        if obligation is None:
            raise NotFound("obligation not found")
        return obligation
