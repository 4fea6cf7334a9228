"""Payment service layer: reads for partners and operators (the saga comes with its issue)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from meshlib.errors import NotFound
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size
from services.payment.domain.payments import Payment
from services.payment.unit_of_work import PaymentUnitOfWork

UnitOfWorkFactory = Callable[..., PaymentUnitOfWork]


class PaymentQueries:
    """Read side of payments."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)):
        self._uow = uow
        self._clock = clock

    async def get_for_partner(self, payment_id: str, partner_id: str) -> Payment:
        """A partner's own payment; someone else's is NOT_FOUND, exactly like a missing one."""
        async with self._uow(read_only=True) as uow:
            payment = await uow.payments.get(payment_id)
        if payment is None or payment.partner_id != partner_id:
            raise NotFound("payment not found")
        return payment

    async def stuck(
        self, older_than: dt.timedelta, requested_page_size: int, page_token: str
    ) -> tuple[list[Payment], str]:
        """Payments stuck mid-saga, oldest id first, with the next page token."""
        size = page_size(requested_page_size)
        filters = filter_fingerprint(older_than=older_than.total_seconds())
        cursor = decode_page_token(page_token, filters) or {}
        async with self._uow(read_only=True) as uow:
            found = await uow.payments.stuck(self._clock() - older_than, cursor.get("after"), size + 1)
        page, more = found[:size], len(found) > size
        return page, encode_page_token({"after": page[-1].payment_id}, filters) if more else ""
