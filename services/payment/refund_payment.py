"""RefundPayment: a partner refunds a payment to its wallet, or the bank's operator any payment."""

from __future__ import annotations

from meshlib.audit import actor_of
from meshlib.auth.context import current_caller
from meshlib.errors import MeshError, NotFound
from meshlib.ids import time_ordered_id
from meshlib.storage import IdempotencyKey
from services.payment.domain import refunds
from services.payment.domain.payments import Payment
from services.payment.domain.refunds import RefundRequest
from services.payment.domain.saga import History, opening, plan_for
from services.payment.ports import Clock, PaymentRegister, RefundRegistration, utc_now
from services.payment.saga import SagaRunner, current_trace_id, traced


class RefundPayment:
    """Check the refund against its original, record it (checked again with the refunds recorded
    meanwhile), and run its saga: the same one any payment of its shape runs."""

    def __init__(self, *, register: PaymentRegister, saga: SagaRunner, clock: Clock = utc_now) -> None:
        self._register = register
        self._saga = saga
        self._clock = clock

    async def __call__(self, request: RefundRequest, key: IdempotencyKey, *, from_scheme: bool = False) -> Payment:
        """The refund, usually SETTLED or REJECTED; a replay answers it as it is now.
        ``from_scheme``: a return (pacs.004) of a payment to another bank, with the scheme's reason."""
        try:
            refunds.check_return_reason(request.reason, from_scheme=from_scheme)
            refund = await self._new_refund(request)
        except MeshError:
            # A retry of a refund that used up the payment must still get its first answer.
            existing = await self._register.replay(key)
            if existing is not None:
                return existing
            raise
        with traced("payment.saga", refund.payment_id):
            records = opening(plan_for(refund))
            stored, created = await self._register.record_refund(
                RefundRegistration(
                    refund, request, key, records, current_trace_id(), actor_of(current_caller(), "payment")
                )
            )
            if not created:
                return stored
            return await self._saga.drive(stored, History(records))

    async def _new_refund(self, request: RefundRequest) -> Payment:
        facts = await self._register.refund_facts(request.original_payment_id)
        # Another partner's payment is NOT_FOUND, exactly like a missing one.
        if facts is None or (request.partner_id is not None and facts[0].partner_id != request.partner_id):
            raise NotFound("payment not found")
        original, refundable = facts
        amount = refunds.check_refundable(original, request, refundable)
        return refunds.refund_of(original, request, amount, time_ordered_id(), self._clock())
