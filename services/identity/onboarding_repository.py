"""Applications for new customers' accounts in identity's store."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.storage import as_utc
from services.identity.domain.onboarding import ApplicantData, Application, ApplicationState, Reason
from services.identity.tables import applications as _table

# States in which a person counts as the bank's customer or applicant (a declined one does not).
_LIVE = [s.value for s in ApplicationState if s is not ApplicationState.DECLINED]


def _applicant_json(applicant: ApplicantData) -> str:
    return json.dumps(
        {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dataclasses.asdict(applicant).items()}
    )


def _applicant(text: str) -> ApplicantData:
    data = json.loads(text)
    for name in ("birth_date", "document_expiry"):
        data[name] = dt.date.fromisoformat(data[name])
    for name in ("verified_at", "terms_accepted_at"):
        data[name] = dt.datetime.fromisoformat(data[name])
    return ApplicantData(**data)


def _row(application: Application) -> dict[str, Any]:
    return {
        "application_id": application.application_id,
        "partner_id": application.partner_id,
        "state": application.state.value,
        "reason": application.reason.value,
        "applicant": _applicant_json(application.applicant),
        "currency": application.currency,
        "consent_permissions": json.dumps(list(application.consent_permissions)),
        "code_challenge": application.code_challenge,
        "identity_key": application.identity_key,
        "document_key": application.document_key,
        "customer_id": application.customer_id,
        "username": application.username,
        "account_id": application.account_id,
        "consent_id": application.consent_id,
        "sealed_activation_code": application.sealed_activation_code,
        "activation_code_hash": application.activation_code_hash,
        "decided_by": application.decided_by,
        "customer_code_hash": application.customer_code_hash,
        "customer_code_expires_at": application.customer_code_expires_at,
        "activation_attempts": application.activation_attempts,
        "activation_locked_at": application.activation_locked_at,
        "created_at": application.created_at,
        "updated_at": application.updated_at,
    }


def _from_row(row: Any) -> Application:
    return Application(
        application_id=row.application_id,
        partner_id=row.partner_id,
        state=ApplicationState(row.state),
        reason=Reason(row.reason),
        applicant=_applicant(row.applicant),
        currency=row.currency,
        consent_permissions=tuple(json.loads(row.consent_permissions)),
        code_challenge=row.code_challenge,
        identity_key=row.identity_key,
        document_key=row.document_key,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        customer_id=row.customer_id,
        username=row.username,
        account_id=row.account_id,
        consent_id=row.consent_id,
        sealed_activation_code=row.sealed_activation_code,
        activation_code_hash=row.activation_code_hash,
        decided_by=row.decided_by,
        customer_code_hash=row.customer_code_hash,
        customer_code_expires_at=as_utc(row.customer_code_expires_at) if row.customer_code_expires_at else None,
        activation_attempts=row.activation_attempts,
        activation_locked_at=as_utc(row.activation_locked_at) if row.activation_locked_at else None,
    )


class ApplicationRepository:
    """Applications: add, save, read, and the duplicate check."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(self, application: Application) -> None:
        await self._connection.execute(sa.insert(_table).values(**_row(application)))

    async def save(self, application: Application) -> None:
        values = _row(application)
        del values["application_id"]
        await self._connection.execute(
            sa.update(_table).where(_table.c.application_id == application.application_id).values(**values)
        )

    async def get(self, application_id: str, *, for_update: bool = False) -> Application | None:
        query = sa.select(_table).where(_table.c.application_id == application_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._connection.execute(query)).first()
        return _from_row(row) if row else None

    async def known_person(self, identity_key: str, document_key: str) -> bool:
        """Whether a live application (not declined) has this person or this document."""
        query = (
            sa.select(_table.c.application_id)
            .where(sa.or_(_table.c.identity_key == identity_key, _table.c.document_key == document_key))
            .where(_table.c.state.in_(_LIVE))
            .limit(1)
        )
        return (await self._connection.execute(query)).first() is not None

    async def page(
        self, state: ApplicationState | None, after: tuple[dt.datetime, str] | None, limit: int
    ) -> list[Application]:
        """Oldest first, keyset-paginated on (created_at, application_id)."""
        query = sa.select(_table)
        if state is not None:
            query = query.where(_table.c.state == state.value)
        if after:
            created, application_id = after
            query = query.where(
                sa.or_(
                    _table.c.created_at > created,
                    sa.and_(_table.c.created_at == created, _table.c.application_id > application_id),
                )
            )
        query = query.order_by(_table.c.created_at, _table.c.application_id).limit(limit)
        return [_from_row(r) for r in await self._connection.execute(query)]

    async def page_for_customer(
        self, customer_id: str, before: tuple[dt.datetime, str] | None, limit: int
    ) -> list[Application]:
        """A customer's applications, newest first, keyset-paginated on (created_at, application_id)."""
        query = sa.select(_table).where(_table.c.customer_id == customer_id)
        if before:
            created, application_id = before
            query = query.where(
                sa.or_(
                    _table.c.created_at < created,
                    sa.and_(_table.c.created_at == created, _table.c.application_id < application_id),
                )
            )
        query = query.order_by(_table.c.created_at.desc(), _table.c.application_id.desc()).limit(limit)
        return [_from_row(r) for r in await self._connection.execute(query)]

    async def waiting_for_account(self, limit: int) -> list[Application]:
        """Approved applications whose account is not open yet (oldest first)."""
        query = (
            sa.select(_table)
            .where(_table.c.state == ApplicationState.APPROVED.value)
            .order_by(_table.c.updated_at)
            .limit(limit)
        )
        return [_from_row(r) for r in await self._connection.execute(query)]
