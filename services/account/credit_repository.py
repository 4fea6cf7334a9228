"""The credit line's repository: offers, lines, the accrual lease, and the ledger figures the
bank decides from (issue 28 item 2). Hides SQL from services/account/credit_service.py."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.storage import as_utc
from services.account.credit_tables import credit_events, credit_lines, credit_offers
from services.account.domain.credit_lines import (
    CreditEvent,
    CreditLine,
    CreditOffer,
    LineState,
    Movement,
    OfferState,
)
from services.account.domain.credit_offers import Refusal
from services.account.domain.ledger import Direction
from services.account.tables import accounts, entries, transfers

_o = credit_offers.c
_l = credit_lines.c


def _offer(row: Any) -> CreditOffer:
    return CreditOffer(
        offer_id=row.id,
        account_id=row.account_id,
        customer_id=row.customer_id,
        partner_id=row.partner_id,
        consent_id=row.consent_id,
        currency=row.currency,
        state=OfferState(row.state),
        refusal=Refusal(row.refusal) if row.refusal else None,
        limit=row.limit_minor,
        apr_bps=row.apr_bps,
        expires_at=as_utc(row.expires_at),
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        line_id=row.line_id,
    )


def _offer_values(offer: CreditOffer) -> dict[str, Any]:
    return {
        "id": offer.offer_id,
        "account_id": offer.account_id,
        "customer_id": offer.customer_id,
        "partner_id": offer.partner_id,
        "consent_id": offer.consent_id,
        "currency": offer.currency,
        "state": offer.state.value,
        "refusal": offer.refusal.value if offer.refusal else None,
        "limit_minor": offer.limit,
        "apr_bps": offer.apr_bps,
        "expires_at": offer.expires_at,
        "line_id": offer.line_id,
        "created_at": offer.created_at,
        "updated_at": offer.updated_at,
    }


def _line(row: Any) -> CreditLine:
    return CreditLine(
        line_id=row.id,
        account_id=row.account_id,
        customer_id=row.customer_id,
        offer_id=row.offer_id,
        currency=row.currency,
        state=LineState(row.state),
        limit=row.limit_minor,
        apr_bps=row.apr_bps,
        accrued_through=row.accrued_through,
        carry_parts=row.carry_parts,
        deferred=row.deferred,
        interest_charged=row.interest_charged,
        opened_at=as_utc(row.opened_at),
        updated_at=as_utc(row.updated_at),
        closed_at=as_utc(row.closed_at),
    )


def _line_values(line: CreditLine) -> dict[str, Any]:
    return {
        "id": line.line_id,
        "account_id": line.account_id,
        "customer_id": line.customer_id,
        "offer_id": line.offer_id,
        "currency": line.currency,
        "state": line.state.value,
        "limit_minor": line.limit,
        "apr_bps": line.apr_bps,
        "accrued_through": line.accrued_through,
        "carry_parts": line.carry_parts,
        "deferred": line.deferred,
        "interest_charged": line.interest_charged,
        "opened_at": line.opened_at,
        "updated_at": line.updated_at,
        "closed_at": line.closed_at,
    }


_debit = accounts.alias("debit_side")
_credit = accounts.alias("credit_side")


class CreditRepository:
    """Offers and lines of one transaction."""

    def __init__(self, connection: AsyncConnection, *, row_locks: bool) -> None:
        self._connection = connection
        self._row_locks = row_locks

    # ---- offers ----

    async def add_offer(self, offer: CreditOffer) -> None:
        """Insert a new offer."""
        await self._connection.execute(credit_offers.insert().values(**_offer_values(offer)))

    async def get_offer(self, offer_id: str, *, lock: bool = False) -> CreditOffer | None:
        """One offer (locked for the transaction when ``lock``)."""
        query = sa.select(credit_offers).where(_o.id == offer_id)
        if lock and self._row_locks:
            query = query.with_for_update()
        row = (await self._connection.execute(query)).first()
        return _offer(row) if row else None

    async def save_offer(self, offer: CreditOffer) -> None:
        """Write an offer's state."""
        await self._connection.execute(
            credit_offers.update()
            .where(_o.id == offer.offer_id)
            .values(state=offer.state.value, line_id=offer.line_id, updated_at=offer.updated_at)
        )

    async def expiring_offers(self, now: dt.datetime, limit: int) -> list[str]:
        """OFFERED offers whose validity is over (the expiry sweep's)."""
        query = (
            sa.select(_o.id)
            .where(_o.state == OfferState.OFFERED.value, _o.expires_at <= now)
            .order_by(_o.expires_at, _o.id)
            .limit(limit)
        )
        return list((await self._connection.execute(query)).scalars())

    async def expire_offer(self, offer_id: str, now: dt.datetime) -> bool:
        """OFFERED -> EXPIRED if still offered and past its expiry; False when another run (or
        an acceptance) changed it first, so the change, and its event, happen once."""
        result = await self._connection.execute(
            credit_offers.update()
            .where(_o.id == offer_id, _o.state == OfferState.OFFERED.value, _o.expires_at <= now)
            .values(state=OfferState.EXPIRED.value, updated_at=now)
        )
        return bool(result.rowcount)

    # ---- lines ----

    async def add_line(self, line: CreditLine) -> None:
        """Insert a new line (the unique index refuses a second active line on the account)."""
        await self._connection.execute(credit_lines.insert().values(**_line_values(line)))

    async def get_line(self, line_id: str, *, lock: bool = False) -> CreditLine | None:
        """One line (locked for the transaction when ``lock``)."""
        query = sa.select(credit_lines).where(_l.id == line_id)
        if lock and self._row_locks:
            query = query.with_for_update()
        row = (await self._connection.execute(query)).first()
        return _line(row) if row else None

    async def active_line_of(self, account_id: str) -> CreditLine | None:
        """The account's active line, if any."""
        query = sa.select(credit_lines).where(_l.account_id == account_id, _l.state == LineState.ACTIVE.value)
        row = (await self._connection.execute(query)).first()
        return _line(row) if row else None

    async def save_line(self, line: CreditLine, *, accrued_before: dt.date | None = None, release: bool = True) -> bool:
        """Write a line's state; with ``accrued_before``, only if no other run accrued it
        meanwhile (the accrual's guard against booking a day twice). Frees its lease unless
        ``release`` is False (more days to book)."""
        values = _line_values(line)
        del values["id"]
        if release:
            values["lease_until"] = None
        statement = credit_lines.update().where(_l.id == line.line_id)
        if accrued_before is not None:
            statement = statement.where(_l.accrued_through == accrued_before)
        result = await self._connection.execute(statement.values(**values))
        return bool(result.rowcount)

    async def customer_lines(
        self, customer_id: str, before: tuple[dt.datetime, str] | None, limit: int
    ) -> list[CreditLine]:
        """A customer's lines, newest first, before a page token's ``(opened_at, id)``."""
        query = sa.select(credit_lines).where(_l.customer_id == customer_id)
        if before is not None:
            query = query.where(sa.or_(_l.opened_at < before[0], sa.and_(_l.opened_at == before[0], _l.id < before[1])))
        query = query.order_by(_l.opened_at.desc(), _l.id.desc()).limit(limit)
        return [_line(row) for row in await self._connection.execute(query)]

    # ---- the accrual job ----

    async def due_for_accrual(self, through: dt.date, now: dt.datetime, limit: int) -> list[str]:
        """Active lines with a day up to ``through`` still to accrue, that nobody holds."""
        query = (
            sa.select(_l.id)
            .where(
                _l.state == LineState.ACTIVE.value,
                _l.accrued_through < through,
                sa.or_(_l.lease_until.is_(None), _l.lease_until < now),
            )
            .order_by(_l.accrued_through, _l.id)
            .limit(limit)
        )
        return list((await self._connection.execute(query)).scalars())

    async def claim(self, line_id: str, now: dt.datetime, lease: dt.timedelta) -> bool:
        """Take the line's accrual for ``lease`` (one replica at a time)."""
        result = await self._connection.execute(
            credit_lines.update()
            .where(_l.id == line_id, sa.or_(_l.lease_until.is_(None), _l.lease_until < now))
            .values(lease_until=now + lease)
        )
        return bool(result.rowcount)

    # ---- the partner's events (the outbox) ----

    async def add_event(self, event: CreditEvent) -> None:
        """An outbox row for the partner's event log, in the change's transaction."""
        await self._connection.execute(
            credit_events.insert().values(
                partner_id=event.partner_id,
                consent_id=event.consent_id,
                kind=event.kind,
                resource=event.resource,
                state=event.state,
                reason=event.reason,
                account_id=event.account_id,
                related=event.related,
                event_time=event.event_time,
            )
        )

    # ---- the account row and the ledger's figures ----

    async def set_overdraft_limit(self, account_id: str, limit: int, now: dt.datetime) -> None:
        """The account's limit below zero (the caller holds the account's row lock)."""
        await self._connection.execute(
            accounts.update().where(accounts.c.id == account_id).values(overdraft_limit=limit, updated_at=now)
        )

    async def movements(self, account_id: str, customer_id: str | None, since: dt.datetime) -> list[Movement]:
        """The account's booked entries since ``since``, oldest first, each marked when the
        other side of its transfer is an account of the same customer."""
        other_customer = sa.case(
            (entries.c.direction == Direction.CREDIT.value, _debit.c.customer_id), else_=_credit.c.customer_id
        )
        query = (
            sa.select(
                entries.c.booking_time,
                entries.c.direction,
                entries.c.amount,
                entries.c.transfer_id,
                entries.c.description,
                other_customer.label("other_customer"),
            )
            .select_from(
                entries.join(transfers, transfers.c.id == entries.c.transfer_id)
                .join(_debit, _debit.c.id == transfers.c.debit_account_id)
                .join(_credit, _credit.c.id == transfers.c.credit_account_id)
            )
            .where(entries.c.account_id == account_id, entries.c.status == "BOOKED", entries.c.booking_time >= since)
            .order_by(entries.c.booking_time, entries.c.seq)
        )
        return [
            Movement(
                booking_time=as_utc(row.booking_time),
                direction=Direction(row.direction),
                amount=row.amount,
                transfer_id=row.transfer_id,
                description=row.description,
                own_transfer=customer_id is not None and row.other_customer == customer_id,
            )
            for row in await self._connection.execute(query)
        ]
