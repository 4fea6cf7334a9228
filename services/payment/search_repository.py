"""Listings of payments, newest first a page at a time: a consent's (ListPayments) and the
operators' search (by id, end-to-end id, partner and state)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.payment.domain.payments import Payment, PaymentState
from services.payment.repository import _payment
from services.payment.tables import payments

_c = payments.c


def newest_first(
    query: sa.Select[Any],
    created_at: sa.ColumnElement[Any],
    row_id: sa.ColumnElement[Any],
    before: tuple[dt.datetime, str] | None,
    limit: int,
) -> sa.Select[Any]:
    """``query`` newest first, keyset-paginated on (created_at, id): the rows after a page
    token's ``before`` (its last row's creation time and id)."""
    if before is not None:
        query = query.where(sa.or_(created_at < before[0], sa.and_(created_at == before[0], row_id < before[1])))
    return query.order_by(created_at.desc(), row_id.desc()).limit(limit)


class PaymentSearchRepository:
    """One query per page; each filter narrows it (an index serves each of them)."""

    async def list_for_consent(
        self,
        partner_id: str,
        consent_id: str,
        *,
        state: PaymentState | None,
        from_time: dt.datetime | None,
        to_time: dt.datetime | None,
        before: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> list[Payment]:
        """The consent's payments, newest first."""
        query = sa.select(payments).where(_c.partner_id == partner_id, _c.consent_id == consent_id)
        if state is not None:
            query = query.where(_c.state == state.name)
        if from_time is not None:
            query = query.where(_c.created_at >= from_time)
        if to_time is not None:
            query = query.where(_c.created_at < to_time)
        return await self._rows(newest_first(query, _c.created_at, _c.payment_id, before, limit))

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
        return await self._rows(newest_first(query, _c.created_at, _c.payment_id, before, limit))

    async def _rows(self, query: sa.Select[Any]) -> list[Payment]:
        return [_payment(row) for row in await self._connection.execute(query)]
