"""Settling a window moves money (SettleSettlementWindow, Mojaloop's settlement).

Three steps, no lock held across the network:

1. **plan** (a read-only transaction): the window must be CLOSED (WINDOW_NOT_CLOSED /
   WINDOW_ALREADY_SETTLED otherwise); its nets, the participants' settlement accounts and the
   bank's give the ledger legs (:func:`~services.settlement.domain.settlement_legs.settlement_legs`);
2. **post** the legs in the ledger as one linked chain, all or none, through the
   :class:`SettlementPoster` port; the chain's request_id and the legs' ids derive from the
   window;
3. **record** (one transaction, keyed by the caller's request_id): under the window's lock it
   becomes SETTLED, each participant's position drops by its net, the audit names the ledger
   transfers.

A crash or an error between 2 and 3 leaves the window CLOSED with the money moved; settling
it again, with any request_id, posts the same chain, which the ledger answers without moving
anything twice, and records it (reconciliation shows SETTLEMENT_NOT_RECORDED meanwhile). Two
settles racing post the same chain; the window's lock lets one record it, the other fails
WINDOW_ALREADY_SETTLED. A replay of a request_id that settled gets its first answer before
step 1. A refused chain moved nothing: the window stays CLOSED, the call fails with the
ledger's reason.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from meshlib.errors import FailedPrecondition, NotFound
from meshlib.storage import IdempotencyKey
from services.settlement.audit_records import audit_window
from services.settlement.domain.reports import window_nets
from services.settlement.domain.settlement_legs import SettlementLeg, chain_request_id, settlement_legs
from services.settlement.domain.windows import SettlementWindow
from services.settlement.service_common import WINDOW_CODEC, SettlementTransactions
from services.settlement.unit_of_work import SettlementUnitOfWork

log = logging.getLogger("settlement.windows")

BANK_REGISTRATION_KEY = "bank"


class SettlementPoster(Protocol):
    """Posting a window's settlement in the account ledger."""

    async def post_linked(self, request_id: str, legs: Sequence[SettlementLeg]) -> list[str]:
        """Post ``legs`` as one linked chain (all or none), idempotent by ``request_id`` and by
        each leg's transfer id; the transfers' names (``transfers/{id}``), in leg order."""
        ...


@dataclass(frozen=True)
class SettlementPlan:
    """What settling a CLOSED window posts: its legs (none when every net is zero)."""

    window: SettlementWindow
    legs: list[SettlementLeg]


async def plan_settlement(uow: SettlementUnitOfWork, window_id: str) -> SettlementPlan:
    """The legs that settle the window; its state checked as settling checks it."""
    window = await uow.windows.get(window_id)
    if window is None:
        raise NotFound("settlement window not found")
    window.require_settleable()
    nets = {p: net for p, net in window_nets(await uow.obligations.in_window(window_id)).items() if net}
    if not nets:
        return SettlementPlan(window, [])
    bank = await uow.participants.by_registration_key(BANK_REGISTRATION_KEY)
    if bank is None:
        raise FailedPrecondition(
            "the bank is not a settlement participant: settling needs its settlement account",
            reason="PARTICIPANT_NOT_ACTIVE",
        )
    participants = await uow.participants.get_many(nets)
    return SettlementPlan(
        window, settlement_legs(window.id, window.currency, nets, participants, bank.settlement_account)
    )


class SettleService:
    """Settles CLOSED windows: the ledger first, then the window and the positions."""

    def __init__(self, transactions: SettlementTransactions, ledger: SettlementPoster) -> None:
        self._tx = transactions
        self._ledger = ledger

    async def settle(self, key: IdempotencyKey, window_id: str, reference: str = "") -> SettlementWindow:
        """Post the window's nets in the ledger (one linked chain), then mark it SETTLED."""
        saved = await self._tx.read(
            lambda uow: uow.idempotency.lookup(key.scope, key.method, key.request_id, key.fingerprint)
        )
        if saved is not None:
            return WINDOW_CODEC.decode(saved)
        plan = await self._tx.read(lambda uow: plan_settlement(uow, window_id))
        chain = chain_request_id(window_id)
        transfers = await self._ledger.post_linked(chain, plan.legs) if plan.legs else []
        if transfers:
            log.info("settlement posted", extra={"window": window_id, "ledger_chain": chain, "legs": len(transfers)})

        async def record(uow: SettlementUnitOfWork) -> SettlementWindow:
            now = self._tx.clock()
            window = await uow.windows.get(window_id, for_update=True)
            if window is None:
                raise NotFound("settlement window not found")
            settled = window.settle(now, reference)  # WINDOW_NOT_CLOSED / WINDOW_ALREADY_SETTLED
            nets = window_nets(await uow.obligations.in_window(window_id))
            locked = await uow.positions.lock(window.currency, nets)
            for participant_id, net in nets.items():
                if net:
                    await uow.positions.save(locked[participant_id].settle(net, now))
            await uow.windows.update(settled)
            audit_window(
                uow,
                "window.settle",
                settled.id,
                settled.state.value,
                {
                    "currency": settled.currency,
                    "gross_minor": settled.gross_minor,
                    "settlement_reference": settled.settlement_reference,
                    "nets_minor": {participant: net for participant, net in sorted(nets.items()) if net},
                    "ledger_chain": chain if transfers else "",
                    "ledger_transfers": transfers,
                },
            )
            return settled

        settled = await self._tx.run(record, key=key, codec=WINDOW_CODEC)
        # Audit trail of a change of money: which window, which external settlement, which transfers.
        log.info(
            "settlement window settled",
            extra={
                "window": settled.id,
                "currency": settled.currency,
                "gross_minor": settled.gross_minor,
                "settlement_reference": settled.settlement_reference,
                "ledger_transfers": len(transfers),
            },
        )
        return settled
