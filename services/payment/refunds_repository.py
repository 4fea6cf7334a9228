"""The refunds of payments, as their originals show them and as the refundable sum needs them."""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.payment.domain.payments import PaymentState, RefundLink
from services.payment.repository import typed_param
from services.payment.tables import payments

_c = payments.c
_REFUNDS_OF = (
    sa.select(_c.original_payment_id, _c.payment_id, _c.state, _c.amount_minor)
    .where(_c.original_payment_id.in_(typed_param("originals", _c.original_payment_id, expanding=True)))
    .order_by(_c.original_payment_id, _c.created_at, _c.payment_id)
)


class RefundRepository:
    """Refunds by the payment they refund (one query for a page of payments)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def of(self, original_ids: Sequence[str]) -> dict[str, tuple[RefundLink, ...]]:
        """Each original's refunds, oldest first; originals without any are left out."""
        ids = [original_id for original_id in original_ids if original_id]
        if not ids:
            return {}
        found: dict[str, list[RefundLink]] = {}
        for row in await self._connection.execute(_REFUNDS_OF, {"originals": ids}):
            link = RefundLink(row.payment_id, PaymentState[row.state], int(row.amount_minor))
            found.setdefault(row.original_payment_id, []).append(link)
        return {original_id: tuple(links) for original_id, links in found.items()}
