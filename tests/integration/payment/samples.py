"""Shared by the payment repository-level tests: a fixed clock, a sample payment, a counting unit-of-work factory."""

from __future__ import annotations

import datetime as dt
from typing import Any

from meshlib.money import Amount
from meshlib.storage import Database
from services.payment.domain.payments import Payment, PaymentState
from services.payment.unit_of_work import PaymentUnitOfWork

NOW = dt.datetime(2025, 3, 14, 12, 0, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=30)


def sample_payment(payment_id: str, **changes: Any) -> Payment:
    """A RECEIVED EUR 10.00 transfer of customer ``cust1`` created at NOW, with ``changes`` applied."""
    values: dict[str, Any] = dict(
        payment_id=payment_id,
        partner_id="p1",
        consent_id="c1",
        debtor_account_id="a1",
        creditor_account_id="a2",
        creditor_wallet_partner_id=None,
        amount=Amount("EUR", 1000),
        payment_type="DOMESTIC",
        state=PaymentState.RECEIVED,
        created_at=NOW,
        updated_at=NOW,
        customer_id="cust1",
    )
    values.update(changes)
    return Payment(**values)


class CountingUnitsOfWork:
    """A unit-of-work factory that counts the writing transactions it opened."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.writes = 0

    def __call__(self, **options: Any) -> PaymentUnitOfWork:
        if not options.get("read_only"):
            self.writes += 1
        return PaymentUnitOfWork(self.database, **options)
