"""Payment repositories: they hide SQL from the service layer."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.money import Amount
from services.payment.domain.payments import Payment, PaymentState
from services.payment.tables import payments

FINAL_STATES = [s.name for s in PaymentState if s.final]


def _aware(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _payment(row: Any) -> Payment:
    return Payment(
        payment_id=row.payment_id,
        partner_id=row.partner_id,
        consent_id=row.consent_id,
        debtor_account_id=row.debtor_account_id,
        creditor_account_id=row.creditor_account_id,
        creditor_wallet_partner_id=row.creditor_wallet_partner_id,
        amount=Amount(row.currency, int(row.amount_minor)),
        payment_type=row.payment_type,
        state=PaymentState[row.state],
        created_at=_aware(row.created_at),
        updated_at=_aware(row.updated_at),
        status_reason=row.status_reason,
        status_reason_message=row.status_reason_message,
        remittance_information=row.remittance_information,
        end_to_end_id=row.end_to_end_id,
    )


class PaymentRepository:
    """Payments, one row each."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def get(self, payment_id: str) -> Payment | None:
        """One payment by id."""
        row = (await self._connection.execute(sa.select(payments).where(payments.c.payment_id == payment_id))).first()
        return _payment(row) if row else None

    async def add(self, payment: Payment) -> None:
        """Store a new payment."""
        await self._connection.execute(
            payments.insert().values(
                payment_id=payment.payment_id,
                partner_id=payment.partner_id,
                consent_id=payment.consent_id,
                debtor_account_id=payment.debtor_account_id,
                creditor_account_id=payment.creditor_account_id,
                creditor_wallet_partner_id=payment.creditor_wallet_partner_id,
                currency=payment.amount.currency,
                amount_minor=payment.amount.minor_units,
                payment_type=payment.payment_type,
                state=payment.state.name,
                status_reason=payment.status_reason,
                status_reason_message=payment.status_reason_message,
                remittance_information=payment.remittance_information,
                end_to_end_id=payment.end_to_end_id,
                created_at=payment.created_at,
                updated_at=payment.updated_at,
            )
        )

    async def stuck(self, updated_before: dt.datetime, after_id: str | None, limit: int) -> list[Payment]:
        """Payments in the middle of the saga, not touched since ``updated_before``."""
        query = (
            sa.select(payments)
            .where(payments.c.state.not_in(FINAL_STATES), payments.c.updated_at < updated_before)
            .order_by(payments.c.payment_id)
            .limit(limit)
        )
        if after_id:
            query = query.where(payments.c.payment_id > after_id)
        return [_payment(row) for row in await self._connection.execute(query)]
