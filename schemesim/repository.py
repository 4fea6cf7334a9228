"""The simulator's repository: received transfers and the returns feed, SQL hidden here."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.money import Amount
from meshlib.storage import as_utc
from schemesim.domain.transfers import AccountId, AccountKind, ClearingRecord, CreditTransfer, Outcome, PaymentReturn
from schemesim.tables import credit_transfers, payment_returns

# Serialises the feed's writers on PostgreSQL (SQLite has one writer anyway): a return's seq
# is taken and committed before the next writer takes one, so a reader after cursor N never
# misses a return that commits later with a smaller seq.
_FEED_LOCK_KEY = 0x5C4E3E  # pg_advisory_xact_lock key, private to this database


def _row_of(record: ClearingRecord) -> dict[str, Any]:
    transfer = record.transfer
    return {
        "message_id": record.message_id,
        "fingerprint": record.fingerprint,
        "end_to_end_id": transfer.end_to_end_id,
        "currency": transfer.amount.currency,
        "amount_minor": transfer.amount.minor_units,
        "debtor_name": transfer.debtor_name,
        "debtor_account_kind": transfer.debtor_account.kind.value,
        "debtor_account": transfer.debtor_account.value,
        "debtor_agent": transfer.debtor_agent,
        "creditor_name": transfer.creditor_name,
        "creditor_account_kind": transfer.creditor_account.kind.value,
        "creditor_account": transfer.creditor_account.value,
        "creditor_agent": transfer.creditor_agent,
        "remittance_information": transfer.remittance_information,
        "outcome": record.outcome.value,
        "reason_code": record.reason_code,
        "rule": record.rule,
        "clearing_reference": record.clearing_reference,
        "accepted_at": record.accepted_at,
        "settle_at": record.settle_at,
        "return_at": record.return_at,
        "submitted_by": record.submitted_by,
    }


def _record_of(row: Any) -> ClearingRecord:
    return ClearingRecord(
        message_id=row.message_id,
        transfer=CreditTransfer(
            end_to_end_id=row.end_to_end_id,
            amount=Amount(row.currency, row.amount_minor),
            debtor_name=row.debtor_name,
            debtor_account=AccountId(AccountKind(row.debtor_account_kind), row.debtor_account),
            debtor_agent=row.debtor_agent,
            creditor_name=row.creditor_name,
            creditor_account=AccountId(AccountKind(row.creditor_account_kind), row.creditor_account),
            creditor_agent=row.creditor_agent,
            remittance_information=row.remittance_information,
        ),
        fingerprint=row.fingerprint,
        outcome=Outcome(row.outcome),
        reason_code=row.reason_code,
        rule=row.rule,
        clearing_reference=row.clearing_reference,
        accepted_at=as_utc(row.accepted_at),
        settle_at=as_utc(row.settle_at),
        return_at=as_utc(row.return_at),
        submitted_by=row.submitted_by,
    )


class ClearingRepository:
    """Received transfers (one row per message id) and the returns feed."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def get(self, message_id: str, *, for_update: bool = False) -> ClearingRecord | None:
        """The transfer received under ``message_id``, if any."""
        query = sa.select(credit_transfers).where(credit_transfers.c.message_id == message_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._connection.execute(query)).first()
        return _record_of(row) if row is not None else None

    async def add(self, record: ClearingRecord) -> None:
        """Store a newly received transfer (a twin insert fails on the primary key)."""
        await self._connection.execute(sa.insert(credit_transfers).values(_row_of(record)))

    async def replace(self, record: ClearingRecord) -> None:
        """Overwrite a transfer whose first delivery was dropped with its real first delivery."""
        await self._connection.execute(
            sa.update(credit_transfers)
            .where(
                credit_transfers.c.message_id == record.message_id,
                credit_transfers.c.outcome == Outcome.DROPPED.value,
            )
            .values(_row_of(record))
        )

    async def lock_feed(self) -> None:
        """Take the feed's writer lock for this transaction (PostgreSQL; SQLite holds it already)."""
        if self._connection.dialect.name == "postgresql":
            await self._connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _FEED_LOCK_KEY})

    async def due_returns(self, now: dt.datetime, limit: int) -> list[ClearingRecord]:
        """Returned transfers whose return is due at ``now`` and not yet in the feed, in due order."""
        in_feed = sa.select(payment_returns.c.message_id).where(
            payment_returns.c.message_id == credit_transfers.c.message_id
        )
        query = (
            sa.select(credit_transfers)
            .where(
                credit_transfers.c.outcome == Outcome.RETURN.value,
                credit_transfers.c.return_at <= now,
                ~sa.exists(in_feed),
            )
            .order_by(credit_transfers.c.return_at, credit_transfers.c.message_id)
            .limit(limit)
        )
        return [_record_of(row) for row in (await self._connection.execute(query)).all()]

    async def append_returns(self, returns: list[PaymentReturn], now: dt.datetime) -> None:
        """Add returns to the feed, in the given order (each gets the next seq)."""
        for item in returns:
            await self._connection.execute(
                sa.insert(payment_returns).values(
                    return_id=item.return_id,
                    message_id=item.message_id,
                    returned_at=item.returned_at,
                    recorded_at=now,
                )
            )

    async def returns_after(self, sequence: int, limit: int) -> list[PaymentReturn]:
        """Returns in the feed after ``sequence``, in feed order."""
        query = (
            sa.select(payment_returns.c.seq, credit_transfers)
            .select_from(payment_returns.join(credit_transfers))
            .where(payment_returns.c.seq > sequence)
            .order_by(payment_returns.c.seq)
            .limit(limit)
        )
        found = []
        for row in (await self._connection.execute(query)).all():
            record = _record_of(row)
            item = record.payment_return(as_utc(row.return_at), sequence=row.seq)
            assert item is not None  # only RETURN transfers whose return was due enter the feed
            found.append(item)
        return found
