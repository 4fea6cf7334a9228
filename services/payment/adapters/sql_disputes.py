"""Disputes in payment's database (the ``disputes`` table), through meshlib's Transactions."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.errors import FailedPrecondition, NotFound
from meshlib.money import Amount
from meshlib.storage import Codec, IdempotencyKey, Transactions
from services.payment.domain.disputes import Dispute, DisputeCategory, DisputeState
from services.payment.tables import disputes as table
from services.payment.unit_of_work import PaymentUnitOfWork

DISPUTE_ID: Codec[str] = Codec(encode=str.encode, decode=bytes.decode)
_UNDECIDED = (DisputeState.OPENED.value, DisputeState.INVESTIGATING.value)


def _aware(moment: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; every stored time is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _row(dispute: Dispute) -> dict[str, Any]:
    return {
        "dispute_id": dispute.dispute_id,
        "payment_id": dispute.payment_id,
        "partner_id": dispute.partner_id,
        "customer_id": dispute.customer_id,
        "category": dispute.category.value,
        "currency": dispute.amount.currency,
        "amount_minor": dispute.amount.minor_units,
        "description": dispute.description,
        "state": dispute.state.value,
        "opened_by": dispute.opened_by,
        "created_at": dispute.created_at,
        "updated_at": dispute.updated_at,
        "decide_by": dispute.decide_by,
        "decision_note": dispute.decision_note,
        "partner_share_minor": dispute.partner_share_minor,
        "bank_share_minor": dispute.bank_share_minor,
        "refund_payment_ids": " ".join(dispute.refund_payment_ids),
    }


def _dispute(row: Any) -> Dispute:
    return Dispute(
        dispute_id=row.dispute_id,
        payment_id=row.payment_id,
        partner_id=row.partner_id,
        customer_id=row.customer_id,
        category=DisputeCategory(row.category),
        amount=Amount(row.currency, row.amount_minor),
        description=row.description,
        state=DisputeState(row.state),
        opened_by=row.opened_by,
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
        decide_by=_aware(row.decide_by),
        decision_note=row.decision_note,
        partner_share_minor=row.partner_share_minor,
        bank_share_minor=row.bank_share_minor,
        refund_payment_ids=tuple(row.refund_payment_ids.split()),
    )


async def _get(connection: AsyncConnection, dispute_id: str, *, for_update: bool = False) -> Dispute | None:
    query = sa.select(table).where(table.c.dispute_id == dispute_id)
    if for_update and connection.dialect.name == "postgresql":
        query = query.with_for_update()
    row = (await connection.execute(query)).first()
    return _dispute(row) if row is not None else None


class SqlDisputes:
    """The dispute store (services/payment/disputes.py's DisputeStore)."""

    def __init__(self, transactions: Transactions[PaymentUnitOfWork]) -> None:
        self._transactions = transactions

    async def add(self, dispute: Dispute, key: IdempotencyKey) -> Dispute:
        """Insert the dispute unless its payment has an undecided one; a replay answers the first."""

        async def change(uow: PaymentUnitOfWork) -> str:
            open_one = (
                await uow.connection.execute(
                    sa.select(table.c.dispute_id).where(
                        table.c.payment_id == dispute.payment_id, table.c.state.in_(_UNDECIDED)
                    )
                )
            ).first()
            if open_one is not None:
                raise FailedPrecondition(
                    "the payment already has an undecided dispute",
                    reason="DISPUTE_ALREADY_OPEN",
                    metadata={"dispute": f"disputes/{open_one.dispute_id}"},
                )
            await uow.connection.execute(sa.insert(table).values(**_row(dispute)))
            return dispute.dispute_id

        dispute_id = await self._transactions.run(change, key=key, codec=DISPUTE_ID)
        stored = await self.get(dispute_id)
        assert stored is not None
        return stored

    async def get(self, dispute_id: str) -> Dispute | None:
        """The dispute, or None."""
        return await self._transactions.read(lambda uow: _get(uow.connection, dispute_id))

    async def move(self, dispute: Dispute, from_state: DisputeState) -> Dispute:
        """Write the new state and split if the dispute is still ``from_state``."""

        async def change(uow: PaymentUnitOfWork) -> Dispute:
            result = await uow.connection.execute(
                sa.update(table)
                .where(table.c.dispute_id == dispute.dispute_id, table.c.state == from_state.value)
                .values(
                    state=dispute.state.value,
                    updated_at=dispute.updated_at,
                    decision_note=dispute.decision_note,
                    partner_share_minor=dispute.partner_share_minor,
                    bank_share_minor=dispute.bank_share_minor,
                )
            )
            if result.rowcount:
                uow.audit.record(
                    "payment.dispute",
                    f"disputes/{dispute.dispute_id}",
                    outcome=dispute.state.value,
                    partner_id=dispute.partner_id,
                    customer_id=dispute.customer_id or None,
                    payment_id=dispute.payment_id,
                    details={
                        "from": from_state.value,
                        "note": dispute.decision_note,
                        "partner_share_minor": dispute.partner_share_minor,
                        "bank_share_minor": dispute.bank_share_minor,
                    },
                )
            now = await _get(uow.connection, dispute.dispute_id)
            if now is None:
                raise NotFound("dispute not found")
            return now

        return await self._transactions.run(change)

    async def set_refunds(self, dispute_id: str, refund_ids: tuple[str, ...]) -> Dispute:
        """Record the refunds that paid the customer."""

        async def change(uow: PaymentUnitOfWork) -> Dispute:
            await uow.connection.execute(
                sa.update(table).where(table.c.dispute_id == dispute_id).values(refund_payment_ids=" ".join(refund_ids))
            )
            stored = await _get(uow.connection, dispute_id)
            assert stored is not None
            return stored

        return await self._transactions.run(change)

    async def page(self, partner_id: str | None, before: tuple[dt.datetime, str] | None, limit: int) -> list[Dispute]:
        """Newest first (keyset on created_at, dispute_id), optionally one partner's."""
        query = sa.select(table).order_by(table.c.created_at.desc(), table.c.dispute_id.desc()).limit(limit)
        if partner_id is not None:
            query = query.where(table.c.partner_id == partner_id)
        if before is not None:
            moment, last_id = before
            query = query.where(
                sa.or_(
                    table.c.created_at < moment,
                    sa.and_(table.c.created_at == moment, table.c.dispute_id < last_id),
                )
            )

        async def read(uow: PaymentUnitOfWork) -> list[Dispute]:
            return [_dispute(row) for row in (await uow.connection.execute(query)).all()]

        return await self._transactions.read(read)

    async def due(self, now: dt.datetime, limit: int) -> list[Dispute]:
        """Undecided past their deadline, and accepted ones whose refunds are not recorded."""
        query = (
            sa.select(table)
            .where(
                sa.or_(
                    sa.and_(table.c.state.in_(_UNDECIDED), table.c.decide_by <= now),
                    sa.and_(table.c.state == DisputeState.ACCEPTED.value, table.c.refund_payment_ids == ""),
                )
            )
            .order_by(table.c.decide_by)
            .limit(limit)
        )

        async def read(uow: PaymentUnitOfWork) -> list[Dispute]:
            return [_dispute(row) for row in (await uow.connection.execute(query)).all()]

        return await self._transactions.read(read)


def replace_refunds(dispute: Dispute, refund_ids: tuple[str, ...]) -> Dispute:
    """``dispute`` with its refunds (the in-memory fake's helper too)."""
    return dataclasses.replace(dispute, refund_payment_ids=refund_ids)
