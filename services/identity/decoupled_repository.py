"""Decoupled authorisations (CIBA poll mode) in identity's store."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.storage import as_utc
from services.identity.domain.authorization import Decision
from services.identity.domain.decoupled import DecoupledRequest
from services.identity.tables import decoupled_authorizations

_table = decoupled_authorizations


def _from_row(row: Any) -> DecoupledRequest:
    return DecoupledRequest(
        request_id=row.request_id,
        auth_req_id_hash=row.auth_req_id_hash,
        partner_id=row.partner_id,
        client_id=row.client_id,
        consent_id=row.consent_id,
        customer_id=row.customer_id,
        binding_message=row.binding_message,
        created_at=as_utc(row.created_at),
        expires_at=as_utc(row.expires_at),
        interval_seconds=int(row.interval_seconds),
        last_polled_at=as_utc(row.last_polled_at),
        decided_at=as_utc(row.decided_at),
        decision=Decision(row.decision) if row.decision else None,
        tokens_issued_at=as_utc(row.tokens_issued_at),
    )


class DecoupledRepository:
    """Decoupled authorisations; deciding and issuing tokens are compare-and-set (once each)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(self, request: DecoupledRequest) -> None:
        """Store a new decoupled authorisation."""
        await self._connection.execute(
            _table.insert().values(
                request_id=request.request_id,
                auth_req_id_hash=request.auth_req_id_hash,
                partner_id=request.partner_id,
                client_id=request.client_id,
                consent_id=request.consent_id,
                customer_id=request.customer_id,
                binding_message=request.binding_message,
                created_at=request.created_at,
                expires_at=request.expires_at,
                interval_seconds=request.interval_seconds,
            )
        )

    async def _one(self, condition: Any, for_update: bool) -> DecoupledRequest | None:
        query = sa.select(_table).where(condition)
        row = (await self._connection.execute(query.with_for_update() if for_update else query)).first()
        return _from_row(row) if row else None

    async def by_auth_req_id_hash(self, digest: str, *, for_update: bool = False) -> DecoupledRequest | None:
        """By the digest of its auth_req_id (row-locked when about to poll it)."""
        return await self._one(_table.c.auth_req_id_hash == digest, for_update)

    async def get(self, request_id: str, *, for_update: bool = False) -> DecoupledRequest | None:
        """By id (row-locked when about to decide it)."""
        return await self._one(_table.c.request_id == request_id, for_update)

    async def pending_for_customer(
        self, customer_id: str, now: dt.datetime, after: tuple[dt.datetime, str] | None, limit: int
    ) -> list[DecoupledRequest]:
        """The customer's undecided, unexpired ones, newest first (keyset after ``after``)."""
        query = sa.select(_table).where(
            _table.c.customer_id == customer_id, _table.c.decided_at.is_(None), _table.c.expires_at > now
        )
        if after is not None:
            created, request_id = after
            query = query.where(
                sa.or_(
                    _table.c.created_at < created,
                    sa.and_(_table.c.created_at == created, _table.c.request_id < request_id),
                )
            )
        query = query.order_by(_table.c.created_at.desc(), _table.c.request_id.desc()).limit(limit)
        return [_from_row(row) for row in await self._connection.execute(query)]

    async def mark_decided(self, decided: DecoupledRequest) -> bool:
        """Record the decision; False when it was decided meanwhile (compare-and-set)."""
        assert decided.decision is not None
        result = await self._connection.execute(
            _table.update()
            .where(_table.c.request_id == decided.request_id, _table.c.decided_at.is_(None))
            .values(decided_at=decided.decided_at, decision=decided.decision.value)
        )
        return (result.rowcount or 0) == 1

    async def mark_polled(self, polled: DecoupledRequest) -> bool:
        """Record a poll (its time, the interval, tokens issued); False when tokens were issued
        meanwhile (compare-and-set: tokens go out once)."""
        result = await self._connection.execute(
            _table.update()
            .where(_table.c.request_id == polled.request_id, _table.c.tokens_issued_at.is_(None))
            .values(
                last_polled_at=polled.last_polled_at,
                interval_seconds=polled.interval_seconds,
                tokens_issued_at=polled.tokens_issued_at,
            )
        )
        return (result.rowcount or 0) == 1

    async def purge_expired(self, before: dt.datetime) -> int:
        """Forget those past their lifetime by a day (a late poll still hears EXPIRED_TOKEN)."""
        result = await self._connection.execute(
            _table.delete().where(_table.c.expires_at < before - dt.timedelta(days=1))
        )
        return result.rowcount or 0
