"""The scheduler's store on the payment database: standing orders and due SCHEDULED payments.

Claims are guarded updates that set a lease (``lease_until``): of several replicas looking at
the same due execution, one takes it; a replica that dies holding one lets it go when the
lease runs out, and the execution's idempotency key (or the SCHEDULED state's guard) makes
the retry answer what the first run did.
"""

from __future__ import annotations

import datetime as dt

from meshlib.audit import Actor
from meshlib.errors import FailedPrecondition, NotFound
from meshlib.storage import Codec, IdempotencyKey, Transactions
from services.payment.domain.payments import Payment
from services.payment.domain.schedules import OrderState, StandingOrder
from services.payment.ports import Clock, utc_now
from services.payment.unit_of_work import PaymentUnitOfWork

ORDER_ID: Codec[str] = Codec(encode=str.encode, decode=bytes.decode)


def _audit(uow: PaymentUnitOfWork, action: str, order: StandingOrder, actor: Actor | None) -> None:
    uow.audit.record(
        action,
        f"standingOrders/{order.order_id}",
        outcome=order.state.name,
        actor=actor,
        partner_id=order.partner_id,
        consent_id=order.consent_id,
        customer_id=order.customer_id or None,
        details={
            "amount_minor": order.amount.minor_units,
            "currency": order.amount.currency,
            "frequency": order.frequency.name,
            "debtor_account": order.debtor_account_id,
            "executions_done": order.executions_done,
        },
    )


class SqlSchedules:
    """:class:`~services.payment.ports.Schedules` on the payment database."""

    def __init__(self, transactions: Transactions[PaymentUnitOfWork], clock: Clock = utc_now) -> None:
        self._tx = transactions
        self._clock = clock

    async def add_order(self, order: StandingOrder, key: IdempotencyKey, actor: Actor | None) -> StandingOrder:
        """Store a new order with its key and audit record."""

        async def change(uow: PaymentUnitOfWork) -> str:
            await uow.standing_orders.add(order)
            _audit(uow, "standing_order.create", order, actor)
            return order.order_id

        return await self._read_order(await self._tx.run(change, key=key, codec=ORDER_ID))

    async def order(self, order_id: str) -> StandingOrder | None:
        """One order."""
        return await self._tx.read(lambda uow: uow.standing_orders.get(order_id))

    async def replay_order(self, key: IdempotencyKey) -> StandingOrder | None:
        """The order a request id made before (REQUEST_ID_REUSED for another payload)."""

        async def read(uow: PaymentUnitOfWork) -> StandingOrder | None:
            saved = await uow.idempotency.lookup(key.scope, key.method, key.request_id, key.fingerprint)
            return await uow.standing_orders.get(saved.decode()) if saved is not None else None

        return await self._tx.read(read)

    async def orders_for_consent(
        self, partner_id: str, consent_id: str, before: tuple[dt.datetime, str] | None, limit: int
    ) -> list[StandingOrder]:
        """A consent's orders, newest first."""
        return await self._tx.read(
            lambda uow: uow.standing_orders.list_for_consent(partner_id, consent_id, before, limit)
        )

    async def cancel_order(
        self, order_id: str, partner_id: str, consent_id: str, key: IdempotencyKey, actor: Actor | None
    ) -> StandingOrder:
        """CANCELLED; a completed order is PAYMENT_NOT_CANCELLABLE; another consent's is NOT_FOUND."""

        async def change(uow: PaymentUnitOfWork) -> str:
            order = await uow.standing_orders.get(order_id)
            if order is None or order.partner_id != partner_id or order.consent_id != consent_id:
                raise NotFound("standing order not found")
            if order.state is OrderState.COMPLETED:
                raise FailedPrecondition(
                    "every execution has run", reason="PAYMENT_NOT_CANCELLABLE", metadata={"state": order.state.name}
                )
            if order.state is OrderState.ACTIVE and await uow.standing_orders.cancel(order_id, self._clock()):
                _audit(uow, "standing_order.cancel", order.cancelled(self._clock()), actor)
            return order_id

        return await self._read_order(await self._tx.run(change, key=key, codec=ORDER_ID))

    async def due_orders(self, now: dt.datetime, limit: int) -> list[str]:
        """Active orders with an execution due that no replica holds."""
        return await self._tx.read(lambda uow: uow.standing_orders.due(now, limit))

    async def claim_order(self, order_id: str, now: dt.datetime, lease: dt.timedelta) -> bool:
        """Take an order's due execution for ``lease``."""
        return await self._tx.run(lambda uow: uow.standing_orders.claim(order_id, now, lease))

    async def advance_order(self, order: StandingOrder, executions_before: int) -> bool:
        """Save the order after its execution; frees the lease."""

        async def change(uow: PaymentUnitOfWork) -> bool:
            advanced = await uow.standing_orders.advance(order, executions_before)
            if advanced and order.state is OrderState.COMPLETED:
                _audit(uow, "standing_order.complete", order, None)
            return advanced

        return await self._tx.run(change)

    async def due_payments(self, now: dt.datetime, limit: int) -> list[str]:
        """SCHEDULED payments whose time has come that no replica holds."""
        return await self._tx.read(lambda uow: uow.scheduled.due(now, limit))

    async def claim_payment(self, payment_id: str, now: dt.datetime, lease: dt.timedelta) -> bool:
        """Take a due SCHEDULED payment's execution for ``lease``."""
        return await self._tx.run(lambda uow: uow.scheduled.claim(payment_id, now, lease))

    async def payment(self, payment_id: str) -> Payment | None:
        """One payment."""
        return await self._tx.read(lambda uow: uow.payments.get(payment_id))

    async def _read_order(self, order_id: str) -> StandingOrder:
        order = await self.order(order_id)
        assert order is not None
        return order
