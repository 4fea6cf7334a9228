"""Pushed authorisation requests (RFC 9126) in identity's store."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.storage import as_utc
from services.identity.domain.authorization import Decision, PushedRequest
from services.identity.tables import authorization_requests

_table = authorization_requests


def _from_row(row: Any) -> PushedRequest:
    return PushedRequest(
        request_id=row.request_id,
        request_uri_hash=row.request_uri_hash,
        partner_id=row.partner_id,
        client_id=row.client_id,
        consent_id=row.consent_id,
        redirect_uri=row.redirect_uri,
        code_challenge=row.code_challenge,
        state=row.state,
        created_at=as_utc(row.created_at),
        expires_at=as_utc(row.expires_at),
        opened_at=as_utc(row.opened_at),
        decide_before=as_utc(row.decide_before),
        decided_at=as_utc(row.decided_at),
        decision=Decision(row.decision) if row.decision else None,
    )


class AuthorizationRequestRepository:
    """Pushed requests; opening and deciding are compare-and-set (each happens once)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(self, pushed: PushedRequest) -> None:
        """Store a new pushed request."""
        await self._connection.execute(
            _table.insert().values(
                request_id=pushed.request_id,
                request_uri_hash=pushed.request_uri_hash,
                partner_id=pushed.partner_id,
                client_id=pushed.client_id,
                consent_id=pushed.consent_id,
                redirect_uri=pushed.redirect_uri,
                code_challenge=pushed.code_challenge,
                state=pushed.state,
                created_at=pushed.created_at,
                expires_at=pushed.expires_at,
            )
        )

    async def by_request_uri_hash(self, request_uri_hash: str) -> PushedRequest | None:
        """A pushed request by the digest of its request_uri."""
        query = sa.select(_table).where(_table.c.request_uri_hash == request_uri_hash)
        row = (await self._connection.execute(query)).first()
        return _from_row(row) if row else None

    async def get(self, request_id: str, *, for_update: bool = False) -> PushedRequest | None:
        """A pushed request by id (row-locked when about to decide it)."""
        query = sa.select(_table).where(_table.c.request_id == request_id)
        row = (await self._connection.execute(query.with_for_update() if for_update else query)).first()
        return _from_row(row) if row else None

    async def mark_opened(self, opened: PushedRequest) -> bool:
        """Record the opening; False when it was opened meanwhile (compare-and-set)."""
        result = await self._connection.execute(
            _table.update()
            .where(_table.c.request_id == opened.request_id, _table.c.opened_at.is_(None))
            .values(opened_at=opened.opened_at, decide_before=opened.decide_before)
        )
        return (result.rowcount or 0) == 1

    async def mark_decided(self, decided: PushedRequest) -> bool:
        """Record the decision; False when it was decided meanwhile (compare-and-set)."""
        assert decided.decision is not None
        result = await self._connection.execute(
            _table.update()
            .where(_table.c.request_id == decided.request_id, _table.c.decided_at.is_(None))
            .values(decided_at=decided.decided_at, decision=decided.decision.value)
        )
        return (result.rowcount or 0) == 1

    async def purge_expired(self, before: dt.datetime) -> int:
        """Forget requests that can no longer be opened nor decided."""
        result = await self._connection.execute(
            _table.delete().where(
                _table.c.expires_at < before,
                sa.or_(_table.c.decide_before.is_(None), _table.c.decide_before < before),
            )
        )
        return result.rowcount or 0
