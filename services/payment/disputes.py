"""Disputes of settled payments: opened by a customer or the bank's operator, decided by the
operator (or accepted at their deadline), an accepted one refunding the customer with the
loss split between the bank and the partner (domain/disputes.py for the rules).

The customer is paid by refunds of the disputed payment (the refund machinery: its saga, its
limit of never refunding more than the payment): the partner's share out of the partner's
wallet settlement account, the wallet owing the bank in the settlement window (an obligation
like any refund's, which the window's report and reconciliation then show), and the bank's
share out of its dispute-loss account of the currency. Their request ids derive from the
dispute, so a decision retried after a crash refunds once; a dispute ACCEPTED whose refunds
are not recorded yet is completed by the sweep.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import Protocol

from meshlib.errors import FailedPrecondition, NotFound
from meshlib.ids import time_ordered_id
from meshlib.money import Amount
from meshlib.storage import IdempotencyKey
from services.payment.domain.disputes import (
    RETURN_REASON_BY_CATEGORY,
    Dispute,
    DisputeDeadlines,
    DisputeRequest,
    DisputeState,
    RiskSharing,
    accepted,
    open_dispute,
    refund_key,
)
from services.payment.domain.refunds import RefundRequest, RefundSource
from services.payment.ports import OPERATOR_REFUND_METHOD, Clock, Participants, PaymentRegister, utc_now
from services.payment.refund_payment import RefundPayment

log = logging.getLogger(__name__)

OPEN_DISPUTE_METHOD = "OpenDispute"
DEADLINE_NOTE = "accepted: the decision deadline passed"


class DisputeStore(Protocol):
    """Where disputes are kept (adapters/sql_disputes.py)."""

    async def add(self, dispute: Dispute, key: IdempotencyKey) -> Dispute:
        """Store a new dispute (once per key: a replay answers the first); DISPUTE_ALREADY_OPEN
        while the payment has an undecided one."""
        ...

    async def get(self, dispute_id: str) -> Dispute | None: ...

    async def move(self, dispute: Dispute, from_state: DisputeState) -> Dispute:
        """Store ``dispute``'s new state (and split) if it is still ``from_state``; else
        the dispute as it is now (decided meanwhile)."""
        ...

    async def set_refunds(self, dispute_id: str, refund_ids: tuple[str, ...]) -> Dispute: ...

    async def page(self, partner_id: str | None, before: tuple[dt.datetime, str] | None, limit: int) -> list[Dispute]:
        """Newest first, optionally one partner's."""
        ...

    async def due(self, now: dt.datetime, limit: int) -> list[Dispute]:
        """Undecided past their deadline, and accepted ones whose refunds are not recorded."""
        ...


class RiskAgreements(Protocol):
    """The partners' risk-sharing agreements (identity's partner registration)."""

    async def risk_sharing(self, partner_id: str) -> RiskSharing: ...


class Disputes:
    """Open, investigate, accept, reject, list; and the sweep of due disputes."""

    def __init__(
        self,
        *,
        store: DisputeStore,
        payments: PaymentRegister,
        refund: RefundPayment,
        agreements: RiskAgreements,
        participants: Participants,
        loss_accounts: Mapping[str, str],
        deadlines: DisputeDeadlines | None = None,
        clock: Clock = utc_now,
    ) -> None:
        self._store = store
        self._payments = payments
        self._refund = refund
        self._agreements = agreements
        self._participants = participants
        self._loss_accounts = dict(loss_accounts)
        self._deadlines = deadlines or DisputeDeadlines()
        self._clock = clock

    async def open(self, request: DisputeRequest, key: IdempotencyKey) -> Dispute:
        """The new OPENED dispute (a replay of ``key`` answers the first)."""
        facts = await self._payments.refund_facts(request.payment_id)
        # Another customer's payment is NOT_FOUND, exactly like a missing one.
        if facts is None or (request.customer_id is not None and facts[0].customer_id != request.customer_id):
            raise NotFound("payment not found")
        payment, refundable = facts
        dispute = open_dispute(payment, request, refundable, self._deadlines, time_ordered_id(), self._clock())
        return await self._store.add(dispute, key)

    async def get(self, dispute_id: str, *, partner_id: str | None = None) -> Dispute:
        """A dispute (another partner's is NOT_FOUND)."""
        dispute = await self._store.get(dispute_id)
        if dispute is None or (partner_id is not None and dispute.partner_id != partner_id):
            raise NotFound("dispute not found", reason="RESOURCE_NOT_FOUND")
        return dispute

    async def page(self, partner_id: str | None, before: tuple[dt.datetime, str] | None, limit: int) -> list[Dispute]:
        """Disputes newest first (a partner's own, or all for the operator)."""
        return await self._store.page(partner_id, before, limit)

    async def investigate(self, dispute_id: str, note: str = "") -> Dispute:
        """OPENED -> INVESTIGATING."""
        dispute = await self.get(dispute_id)
        if dispute.state is DisputeState.INVESTIGATING:
            return dispute
        return await self._store.move(dispute.moved(DisputeState.INVESTIGATING, self._clock(), note), dispute.state)

    async def reject(self, dispute_id: str, note: str = "") -> Dispute:
        """REJECTED: nothing moves (a retry answers it again)."""
        dispute = await self.get(dispute_id)
        if dispute.state is DisputeState.REJECTED:
            return dispute
        return await self._store.move(dispute.moved(DisputeState.REJECTED, self._clock(), note), dispute.state)

    async def accept(self, dispute_id: str, note: str = "") -> Dispute:
        """ACCEPTED with its split, the customer refunded (a retry completes, never repeats)."""
        dispute = await self.get(dispute_id)
        if dispute.state is not DisputeState.ACCEPTED:
            agreement = await self._agreements.risk_sharing(dispute.partner_id)
            decided = accepted(dispute, agreement, self._clock(), note)
            if decided.bank_share_minor and dispute.amount.currency not in self._loss_accounts:
                raise FailedPrecondition(
                    f"no dispute-loss account for {dispute.amount.currency} (OBM_DISPUTE_LOSS_ACCOUNTS)",
                    reason="DISPUTE_LOSS_ACCOUNT_MISSING",
                    metadata={"currency": dispute.amount.currency},
                )
            dispute = await self._store.move(decided, dispute.state)
            if dispute.state is not DisputeState.ACCEPTED:  # rejected meanwhile
                return dispute
        if dispute.refund_payment_ids:
            return dispute
        return await self._store.set_refunds(dispute.dispute_id, await self._pay(dispute))

    async def _pay(self, dispute: Dispute) -> tuple[str, ...]:
        currency = dispute.amount.currency
        reason = RETURN_REASON_BY_CATEGORY[dispute.category.value]
        refund_ids: list[str] = []
        if dispute.partner_share_minor:
            wallet = await self._participants.wallet(dispute.partner_id)
            bank = await self._participants.bank()
            source = RefundSource(
                wallet.settlement_account_id, wallet.participant_id, bank.participant_id, obligation_kind="LOSS_SHARE"
            )
            refund_ids.append(await self._refund_share(dispute, "partner", dispute.partner_share_minor, source, reason))
        if dispute.bank_share_minor:
            source = RefundSource(self._loss_accounts[currency])
            refund_ids.append(await self._refund_share(dispute, "bank", dispute.bank_share_minor, source, reason))
        return tuple(refund_ids)

    async def _refund_share(self, dispute: Dispute, bearer: str, minor: int, source: RefundSource, reason: str) -> str:
        request = RefundRequest(
            dispute.payment_id,
            Amount(dispute.amount.currency, minor),
            reason,
            remittance_information=f"dispute {dispute.dispute_id}: {bearer} share",
            source=source,
        )
        request_id = refund_key(dispute.dispute_id, bearer)
        refund = await self._refund(request, IdempotencyKey("disputes", OPERATOR_REFUND_METHOD, request_id, request_id))
        return refund.payment_id

    async def sweep(self, limit: int = 100) -> int:
        """Accept the disputes past their deadline and complete accepted ones; how many."""
        done = 0
        for dispute in await self._store.due(self._clock(), limit):
            try:
                await self.accept(dispute.dispute_id, DEADLINE_NOTE if not dispute.state.final else "")
                done += 1
            except Exception:  # one dispute's failure must not stop the others; tried again next sweep
                log.exception("dispute sweep failed", extra={"dispute_id": dispute.dispute_id})
        return done
