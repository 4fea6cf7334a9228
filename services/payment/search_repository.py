"""Operators' search over payments: by id, end-to-end id, partner and state, newest first."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.payment.domain.payments import Payment, PaymentState
from services.payment.repository import _payment
from services.payment.tables import payments

_c = payments.c


class PaymentSearchRepository:
    """One query per page; each filter narrows it (an index serves each of them)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def search(
        self,
        *,
        payment_id: str | None,
        end_to_end_id: str | None,
        partner_id: str | None,
        state: PaymentState | None,
        before: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> list[Payment]:
        """The matching payments, newest first, before the ``(created_at, id)`` of a page token."""
        query = sa.select(payments)
        if payment_id:
            query = query.where(_c.payment_id == payment_id)
        if end_to_end_id:
            query = query.where(_c.end_to_end_id == end_to_end_id)
        if partner_id:
            query = query.where(_c.partner_id == partner_id)
        if state is not None:
            query = query.where(_c.state == state.name)
        if before is not None:
            query = query.where(
                sa.or_(_c.created_at < before[0], sa.and_(_c.created_at == before[0], _c.payment_id < before[1]))
            )
        query = query.order_by(_c.created_at.desc(), _c.payment_id.desc()).limit(limit)
        return [_payment(row) for row in await self._connection.execute(query)]
