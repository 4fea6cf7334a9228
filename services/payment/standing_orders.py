"""Standing orders: create one under a consent, read and cancel them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from meshlib.audit import actor_of
from meshlib.auth.consent import ConsentLookup
from meshlib.auth.context import current_caller
from meshlib.errors import InvalidArgument, MeshError, NotFound
from meshlib.ids import time_ordered_id
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size, time_and_id
from meshlib.storage import IdempotencyKey
from services.payment.create_payment import NewPayment, Router
from services.payment.domain import checks, schedules
from services.payment.domain.schedules import Frequency, OrderState, StandingOrder
from services.payment.ports import (
    CREATE_STANDING_ORDER_METHOD,
    Clock,
    Ledger,
    Schedules,
    utc_now,
)
from services.payment.queries import require_usable_consent


@dataclass(frozen=True)
class NewStandingOrder:
    """A validated CreateStandingOrder request: the payment of each execution and its schedule."""

    payment: NewPayment
    frequency: Frequency
    first_execution_at: dt.datetime
    execution_count: int | None
    final_execution_at: dt.datetime | None


class StandingOrders:
    """Create, read and cancel a consent's standing orders (the scheduler executes them)."""

    def __init__(
        self,
        *,
        consents: ConsentLookup,
        ledger: Ledger,
        router: Router,
        schedules_store: Schedules,
        clock: Clock = utc_now,
    ) -> None:
        self._consents = consents
        self._ledger = ledger
        self._router = router
        self._store = schedules_store
        self._clock = clock

    async def create(self, partner_id: str, consent_id: str, new: NewStandingOrder) -> StandingOrder:
        """Check the order as its first execution would be checked, then store it ACTIVE."""
        key = IdempotencyKey(partner_id, CREATE_STANDING_ORDER_METHOD, new.payment.request_id, new.payment.fingerprint)
        now = self._clock()
        try:
            _check_schedule(new, now)
            consent = await self._consents.get(consent_id, partner_id=partner_id)
            checks.check_consent(consent, new.payment.debtor_account_id, now)
            checks.check_schedule_permission(consent, now)
            debtor = await self._ledger.describe_account(new.payment.debtor_account_id)
            checks.check_debtor_account(debtor, consent, new.payment.amount)
            checks.check_consent_limits(consent, new.payment.amount, 0)  # the per-payment limit
            await self._router.route(partner_id, new.payment)
        except MeshError:
            existing = await self._store.replay_order(key)  # a retry gets its first answer
            if existing is not None:
                return existing
            raise
        payment = new.payment
        order = StandingOrder(
            order_id=time_ordered_id(),
            partner_id=partner_id,
            consent_id=consent_id,
            customer_id=consent.customer_id or "",
            debtor_account_id=payment.debtor_account_id,
            creditor_account_id=payment.creditor_account_id,
            creditor_wallet_partner_id=payment.creditor_wallet_partner_id,
            amount=payment.amount,
            payment_type=payment.payment_type,
            frequency=new.frequency,
            first_execution_at=new.first_execution_at,
            execution_count=new.execution_count,
            final_execution_at=new.final_execution_at,
            state=OrderState.ACTIVE,
            executions_done=0,
            created_at=now,
            updated_at=now,
            remittance_information=payment.remittance_information,
        )
        return await self._store.add_order(order, key, actor_of(current_caller(), "payment"))

    async def get(self, order_id: str, partner_id: str, consent_id: str) -> StandingOrder:
        """One of the consent's orders (the consent still usable); any other is NOT_FOUND."""
        await require_usable_consent(self._consents, partner_id, consent_id, self._clock())
        order = await self._store.order(order_id)
        if order is None or order.partner_id != partner_id or order.consent_id != consent_id:
            raise NotFound("standing order not found")
        return order

    async def list(
        self, partner_id: str, consent_id: str, requested_page_size: int, page_token: str
    ) -> tuple[list[StandingOrder], str]:
        """The consent's orders, newest first, with the next page token."""
        await require_usable_consent(self._consents, partner_id, consent_id, self._clock())
        size = page_size(requested_page_size)
        filters = filter_fingerprint(partner=partner_id, consent=consent_id)
        before = time_and_id(decode_page_token(page_token, filters))
        found = await self._store.orders_for_consent(partner_id, consent_id, before, size + 1)
        page = found[:size]
        token = ""
        if len(found) > size:
            token = encode_page_token({"t": page[-1].created_at.isoformat(), "id": page[-1].order_id}, filters)
        return page, token

    async def cancel(self, partner_id: str, consent_id: str, order_id: str, key: IdempotencyKey) -> StandingOrder:
        """No execution starts after this."""
        return await self._store.cancel_order(
            order_id, partner_id, consent_id, key, actor_of(current_caller(), "payment")
        )


def _check_schedule(new: NewStandingOrder, now: dt.datetime) -> None:
    first = new.first_execution_at
    if first < now + schedules.IMMEDIATE_WITHIN or first > now + schedules.MAX_AHEAD:
        raise InvalidArgument.field("first_execution_time", "must be from a minute to a year ahead")
    if new.final_execution_at is not None and new.final_execution_at < first:
        raise InvalidArgument.field("final_execution_time", "must not be before first_execution_time")
