"""The returns feed's cursor and lease on the payment database (SQLite and PostgreSQL): one
replica reads the feed at a time, a replica that lost the lease cannot move the cursor, and the
cursor a holder kept is where the next holder starts; the payments awaiting the scheme are the
status poller's (lease expired) and no one else's."""

from __future__ import annotations

import datetime as dt
from functools import partial

from meshlib.money import Amount
from meshlib.storage import Database, Transactions
from meshlib.storage.migrations import upgrade_to_head
from services.payment.adapters.sql_clearing_feeds import SqlClearingFeeds
from services.payment.bootstrap import VERSIONS_DIR
from services.payment.domain.payments import ExternalCreditor, Payment, PaymentState
from services.payment.unit_of_work import PaymentUnitOfWork

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
LEASE = dt.timedelta(seconds=30)


async def test_one_holder_at_a_time_moves_the_cursor_and_the_next_starts_from_it(database_url: str) -> None:
    db = Database(database_url)
    await upgrade_to_head(db, VERSIONS_DIR, "payment")
    clock = [NOW]
    try:
        feeds = SqlClearingFeeds(Transactions(partial(PaymentUnitOfWork, db)), clock=lambda: clock[0])
        assert await feeds.cursor("returns") == ""
        assert await feeds.claim("returns", "replica-a", LEASE)
        assert not await feeds.claim("returns", "replica-b", LEASE)  # a's lease is live
        assert await feeds.save("returns", "replica-a", "7")
        assert not await feeds.save("returns", "replica-b", "9")  # b holds nothing
        clock[0] = NOW + LEASE + dt.timedelta(seconds=1)  # a stalled past its lease
        assert not await feeds.save("returns", "replica-a", "8")  # too late: the lease ran out
        assert await feeds.claim("returns", "replica-b", LEASE)
        assert not await feeds.save("returns", "replica-a", "8")  # b holds it now
        assert await feeds.cursor("returns") == "7"  # b starts where a's last kept cursor is
        await feeds.release("returns", "replica-b")
        assert await feeds.claim("returns", "replica-a", LEASE)  # free at once after a release
    finally:
        await db.dispose()


def _external(payment_id: str, state: PaymentState) -> Payment:
    return Payment(
        payment_id=payment_id,
        partner_id="w1",
        consent_id="c1",
        debtor_account_id="a1",
        creditor_account_id=None,
        creditor_wallet_partner_id=None,
        amount=Amount("EUR", 500),
        payment_type="EXTERNAL_TRANSFER",
        state=state,
        created_at=NOW,
        updated_at=NOW,
        customer_id="cust1",
        external_creditor=ExternalCreditor("DE89370400440532013000", "IBAN", "Erika", "COBADEFFXXX"),
    )


async def test_the_poller_sees_payments_to_other_banks_in_flight_once_their_lease_ran_out(database_url: str) -> None:
    db = Database(database_url)
    await upgrade_to_head(db, VERSIONS_DIR, "payment")
    try:
        async with PaymentUnitOfWork(db) as uow:
            await uow.payments.add(_external("waiting", PaymentState.SETTLEMENT_IN_PROCESS), lease_until=NOW)
            await uow.payments.add(_external("driven", PaymentState.SETTLEMENT_IN_PROCESS), lease_until=NOW + LEASE)
            await uow.payments.add(_external("done", PaymentState.SETTLED))
            await uow.commit()
        async with PaymentUnitOfWork(db, read_only=True) as uow:
            assert await uow.payments.awaiting_clearing(NOW + dt.timedelta(seconds=1), 10) == ["waiting"]
            stored = await uow.payments.get("waiting")
        assert stored is not None and stored.external_creditor == _external("x", PaymentState.SETTLED).external_creditor
    finally:
        await db.dispose()
