"""What the scheduler keeps and claims: standing orders (one row each, with the lease on the
next execution) and the SCHEDULED payments whose time has come."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.money import Amount
from meshlib.storage import as_utc
from services.payment.domain.payments import PaymentState
from services.payment.domain.schedules import Frequency, OrderState, StandingOrder
from services.payment.repository import typed_param
from services.payment.tables import payments, standing_orders

_o = standing_orders.c
_ID = typed_param("oid", _o.order_id)
_NOW = typed_param("now", _o.updated_at)
_GET = sa.select(standing_orders).where(_o.order_id == _ID)
# An order due and free: its next execution's time has come and no replica holds it.
_ORDER_DUE_AND_FREE = sa.and_(
    _o.state == OrderState.ACTIVE.name,
    _o.next_execution_at <= typed_param("now", _o.next_execution_at),
    sa.or_(_o.lease_until.is_(None), _o.lease_until < typed_param("now", _o.lease_until)),
)
_DUE = (
    sa.select(_o.order_id)
    .where(_ORDER_DUE_AND_FREE)
    .order_by(_o.next_execution_at, _o.order_id)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
_CLAIM = (
    standing_orders.update()
    .where(_o.order_id == _ID, _ORDER_DUE_AND_FREE)
    .values(lease_until=typed_param("until", _o.lease_until))
)


def _order(row: Any) -> StandingOrder:
    return StandingOrder(
        order_id=row.order_id,
        partner_id=row.partner_id,
        consent_id=row.consent_id,
        customer_id=row.customer_id,
        debtor_account_id=row.debtor_account_id,
        creditor_account_id=row.creditor_account_id,
        creditor_wallet_partner_id=row.creditor_wallet_partner_id,
        amount=Amount(row.currency, int(row.amount_minor)),
        payment_type=row.payment_type,
        frequency=Frequency[row.frequency],
        first_execution_at=as_utc(row.first_execution_at),
        execution_count=row.execution_count,
        final_execution_at=as_utc(row.final_execution_at) if row.final_execution_at else None,
        state=OrderState[row.state],
        executions_done=int(row.executions_done),
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        remittance_information=row.remittance_information,
    )


class StandingOrderRepository:
    """Standing orders: stored, read, claimed for an execution, advanced, cancelled."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(self, order: StandingOrder) -> None:
        """Store a new order."""
        await self._connection.execute(
            standing_orders.insert().values(
                order_id=order.order_id,
                partner_id=order.partner_id,
                consent_id=order.consent_id,
                customer_id=order.customer_id,
                debtor_account_id=order.debtor_account_id,
                creditor_account_id=order.creditor_account_id,
                creditor_wallet_partner_id=order.creditor_wallet_partner_id,
                currency=order.amount.currency,
                amount_minor=order.amount.minor_units,
                payment_type=order.payment_type,
                frequency=order.frequency.name,
                first_execution_at=order.first_execution_at,
                execution_count=order.execution_count,
                final_execution_at=order.final_execution_at,
                state=order.state.name,
                executions_done=order.executions_done,
                next_execution_at=order.next_execution_at,
                remittance_information=order.remittance_information,
                created_at=order.created_at,
                updated_at=order.updated_at,
            )
        )

    async def get(self, order_id: str) -> StandingOrder | None:
        """One order by id."""
        row = (await self._connection.execute(_GET, {"oid": order_id})).first()
        return _order(row) if row else None

    async def list_for_consent(
        self, partner_id: str, consent_id: str, before: tuple[dt.datetime, str] | None, limit: int
    ) -> list[StandingOrder]:
        """A consent's orders, newest first, before the ``(created_at, id)`` of a page token."""
        query = sa.select(standing_orders).where(_o.partner_id == partner_id, _o.consent_id == consent_id)
        if before is not None:
            query = query.where(
                sa.or_(_o.created_at < before[0], sa.and_(_o.created_at == before[0], _o.order_id < before[1]))
            )
        query = query.order_by(_o.created_at.desc(), _o.order_id.desc()).limit(limit)
        return [_order(row) for row in await self._connection.execute(query)]

    async def due(self, now: dt.datetime, limit: int) -> list[str]:
        """Active orders whose next execution is due and that nobody is executing."""
        return list((await self._connection.execute(_DUE, {"now": now, "limit": limit})).scalars())

    async def claim(self, order_id: str, now: dt.datetime, lease: dt.timedelta) -> bool:
        """Take the order's due execution for ``lease`` (one replica at a time)."""
        result = await self._connection.execute(_CLAIM, {"oid": order_id, "now": now, "until": now + lease})
        return bool(result.rowcount)

    async def advance(self, order: StandingOrder, executions_before: int) -> bool:
        """Save ``order`` after an execution, unless another run advanced it first; frees the lease."""
        result = await self._connection.execute(
            standing_orders.update()
            .where(
                _o.order_id == order.order_id,
                _o.executions_done == executions_before,
                _o.state == OrderState.ACTIVE.name,
            )
            .values(
                executions_done=order.executions_done,
                state=order.state.name,
                next_execution_at=order.next_execution_at,
                updated_at=order.updated_at,
                lease_until=None,
            )
        )
        return bool(result.rowcount)

    async def cancel(self, order_id: str, now: dt.datetime) -> bool:
        """ACTIVE -> CANCELLED; False when the order is not active."""
        result = await self._connection.execute(
            standing_orders.update()
            .where(_o.order_id == order_id, _o.state == OrderState.ACTIVE.name)
            .values(state=OrderState.CANCELLED.name, next_execution_at=None, updated_at=now)
        )
        return bool(result.rowcount)


_c = payments.c
# Due and free: its time has come and no replica holds its execution.
_DUE_AND_FREE = sa.and_(
    _c.state == PaymentState.SCHEDULED.name,
    _c.requested_execution_time <= typed_param("now", _c.requested_execution_time),
    sa.or_(_c.lease_until.is_(None), _c.lease_until < typed_param("now", _c.lease_until)),
)
_DUE_SCHEDULED = (
    sa.select(_c.payment_id)
    .where(_DUE_AND_FREE)
    .order_by(_c.requested_execution_time, _c.payment_id)
    .limit(sa.bindparam("limit", type_=sa.Integer))
)
_CLAIM_SCHEDULED = (
    payments.update()
    .where(_c.payment_id == typed_param("pid", _c.payment_id), _DUE_AND_FREE)
    .values(lease_until=typed_param("until", _c.lease_until))
)


class ScheduledPaymentRepository:
    """Future-dated payments the scheduler finds due and claims (their execution is
    PaymentRepository.execute_scheduled)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def due(self, now: dt.datetime, limit: int) -> list[str]:
        """SCHEDULED payments whose time has come and that nobody is executing, oldest due first."""
        return list((await self._connection.execute(_DUE_SCHEDULED, {"now": now, "limit": limit})).scalars())

    async def claim(self, payment_id: str, now: dt.datetime, lease: dt.timedelta) -> bool:
        """Take the execution of a due SCHEDULED payment for ``lease`` (one replica at a time)."""
        result = await self._connection.execute(_CLAIM_SCHEDULED, {"pid": payment_id, "now": now, "until": now + lease})
        return bool(result.rowcount)
