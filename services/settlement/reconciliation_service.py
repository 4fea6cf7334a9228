"""Service layer for reconciliation: a window's obligations, and its settlement, against the
account ledger.

The ledger is reached through the :class:`LedgerReader` port; the gRPC adapter lives in
``ledger_client.py`` and tests pass a fake.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Protocol

from meshlib.errors import NotFound
from services.settlement.domain.obligations import Obligation
from services.settlement.domain.participants import Participant
from services.settlement.domain.reconciliation import LedgerTransfer, ReconciliationReport, reconcile
from services.settlement.domain.settlement_legs import window_reference
from services.settlement.domain.windows import SettlementWindow
from services.settlement.service_common import SettlementTransactions
from services.settlement.unit_of_work import SettlementUnitOfWork


class LedgerReader(Protocol):
    """Read access to the account ledger's transfers."""

    async def transfers_for_payments(self, payment_ids: Sequence[str]) -> dict[str, list[LedgerTransfer]]:
        """The transfers whose reference is ``payments/{id}``, per payment id."""
        ...

    async def transfers_for_account(self, account: str, start: dt.datetime, end: dt.datetime) -> list[LedgerTransfer]:
        """The transfers debiting or crediting ``account`` created in [start, end)."""
        ...

    async def transfers_for_reference(self, reference: str) -> list[LedgerTransfer]:
        """The transfers whose reference is exactly ``reference`` (a window's settlement legs)."""
        ...


class ReconciliationService:
    """Proves the ledger and the settlement positions agree, window by window."""

    def __init__(self, transactions: SettlementTransactions, ledger: LedgerReader) -> None:
        self._tx = transactions
        self._ledger = ledger

    async def reconcile(self, window_id: str) -> ReconciliationReport:
        """Every difference between the window's committed obligations and the ledger."""

        async def load(
            uow: SettlementUnitOfWork,
        ) -> tuple[SettlementWindow, list[Obligation], dict[str, Participant]]:
            window = await uow.windows.get(window_id)
            if window is None:
                raise NotFound("settlement window not found")
            in_window = await uow.obligations.in_window(window_id)
            everyone = await _all_participants(uow)
            return window, in_window, everyone

        window, in_window, participants = await self._tx.read(load)
        now = self._tx.clock()
        # The ledger is read outside any transaction: no lock is held across the network.
        by_payment = await self._ledger.transfers_for_payments([o.id for o in in_window])
        end = window.closed_at or now
        scanned: dict[str, LedgerTransfer] = {}
        for account in sorted({p.settlement_account for p in participants.values()}):
            for transfer in await self._ledger.transfers_for_account(account, window.opened_at, end):
                scanned[transfer.name] = transfer
        in_window_ids = {o.id for o in in_window}
        referenced = {t.payment_id for t in scanned.values() if t.payment_id and t.payment_id not in in_window_ids}

        async def known(uow: SettlementUnitOfWork) -> dict[str, Obligation]:
            return await uow.obligations.get_many(p for p in referenced if p)

        known_obligations = await self._tx.read(known)
        settlement = await self._ledger.transfers_for_reference(window_reference(window_id))
        return reconcile(
            window_id,
            in_window,
            participants,
            by_payment,
            list(scanned.values()),
            known_obligations,
            now,
            window=window,
            settlement_transfers=settlement,
        )


async def _all_participants(uow: SettlementUnitOfWork) -> dict[str, Participant]:
    everyone: dict[str, Participant] = {}
    after: int | None = None
    while True:
        page = await uow.participants.page(after, 500)
        everyone.update({p.id: p for _, p in page})
        if len(page) < 500:
            return everyone
        after = page[-1][0]
