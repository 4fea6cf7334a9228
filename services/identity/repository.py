"""Identity repositories: they hide SQL from the service layer."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.mandates import Mandate
from meshlib.money import Amount
from meshlib.storage import as_utc
from services.identity.domain.consents import Consent, ConsentState
from services.identity.domain.customers import Customer, CustomerStatus
from services.identity.domain.keys import KeyState, SigningKey
from services.identity.domain.partners import AuthMethod, Partner, PartnerStatus
from services.identity.domain.tokens import AuthorizationCode, IssuedToken, RefreshToken
from services.identity.tables import (
    access_tokens,
    authorization_codes,
    client_assertions,
    consents,
    customers,
    partners,
    refresh_tokens,
    signing_keys,
)


def _required(value: dt.datetime | None) -> dt.datetime:
    aware = as_utc(value)
    assert aware is not None
    return aware


def _amount(currency: str | None, minor: int | None) -> Amount | None:
    return Amount(currency, int(minor)) if currency and minor is not None else None


def _split(text: str) -> tuple[str, ...]:
    return tuple(text.split()) if text else ()


class SigningKeyRepository:
    """Signing keys, persisted with their private half encrypted."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def all(self) -> list[SigningKey]:
        """Every key, newest first."""
        rows = await self._connection.execute(sa.select(signing_keys).order_by(signing_keys.c.created_at.desc()))
        return [
            SigningKey(
                kid=row.kid,
                state=KeyState(row.state),
                public_jwk=json.loads(row.public_jwk),
                encrypted_private_pem=bytes(row.encrypted_private_pem),
                created_at=as_utc(row.created_at),
                retire_after=as_utc(row.retire_after),
                activates_at=as_utc(row.activates_at),
            )
            for row in rows
        ]

    async def add(self, key: SigningKey) -> None:
        """Store a new key."""
        await self._connection.execute(
            signing_keys.insert().values(
                kid=key.kid,
                state=key.state.value,
                public_jwk=json.dumps(key.public_jwk),
                encrypted_private_pem=key.encrypted_private_pem,
                created_at=key.created_at,
                retire_after=key.retire_after,
                activates_at=key.activates_at,
            )
        )

    async def update_state(self, key: SigningKey) -> None:
        """Persist a key's new state."""
        await self._connection.execute(
            signing_keys.update()
            .where(signing_keys.c.kid == key.kid)
            .values(state=key.state.value, retire_after=key.retire_after)
        )


class PartnerRepository:
    """Partners (OAuth clients)."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    @staticmethod
    def _values(partner: Partner) -> dict[str, Any]:
        return {
            "partner_id": partner.partner_id,
            "client_id": partner.client_id,
            "display_name": partner.display_name,
            "status": partner.status.value,
            "allowed_scopes": " ".join(partner.allowed_scopes),
            "rate_limit_tier": partner.rate_limit_tier,
            "per_payment_currency": partner.per_payment_limit.currency if partner.per_payment_limit else None,
            "per_payment_minor": partner.per_payment_limit.minor_units if partner.per_payment_limit else None,
            "daily_currency": partner.daily_limit.currency if partner.daily_limit else None,
            "daily_minor": partner.daily_limit.minor_units if partner.daily_limit else None,
            "auth_method": partner.auth_method.value,
            "public_key_pem": partner.public_key_pem,
            "client_secret_hash": partner.client_secret_hash,
            "tls_client_certificate_sha256": partner.tls_client_certificate_sha256,
            "created_at": partner.created_at,
            "updated_at": partner.updated_at,
            "tokens_valid_after": partner.tokens_valid_after,
            "certificate_bound_tokens": partner.certificate_bound_tokens,
            "redirect_uris": "\n".join(partner.redirect_uris),
            "fraud_share_bps": partner.risk_sharing_bps[0],
            "not_received_share_bps": partner.risk_sharing_bps[1],
            "wrong_amount_share_bps": partner.risk_sharing_bps[2],
            "risk_tier": partner.risk_tier,
        }

    @staticmethod
    def _from_row(row: Any) -> Partner:
        return Partner(
            partner_id=row.partner_id,
            client_id=row.client_id,
            display_name=row.display_name,
            status=PartnerStatus(row.status),
            allowed_scopes=_split(row.allowed_scopes),
            rate_limit_tier=row.rate_limit_tier,
            per_payment_limit=_amount(row.per_payment_currency, row.per_payment_minor),
            daily_limit=_amount(row.daily_currency, row.daily_minor),
            auth_method=AuthMethod(row.auth_method),
            public_key_pem=row.public_key_pem,
            client_secret_hash=row.client_secret_hash,
            tls_client_certificate_sha256=row.tls_client_certificate_sha256,
            created_at=_required(row.created_at),
            updated_at=_required(row.updated_at),
            tokens_valid_after=as_utc(row.tokens_valid_after),
            certificate_bound_tokens=bool(row.certificate_bound_tokens),
            redirect_uris=_split(row.redirect_uris),
            risk_sharing_bps=(row.fraud_share_bps, row.not_received_share_bps, row.wrong_amount_share_bps),
            risk_tier=row.risk_tier,
        )

    async def add(self, partner: Partner) -> None:
        """Store a new partner."""
        await self._connection.execute(partners.insert().values(**self._values(partner)))

    async def save(self, partner: Partner) -> None:
        """Persist a changed partner."""
        values = self._values(partner)
        del values["partner_id"]
        await self._connection.execute(
            partners.update().where(partners.c.partner_id == partner.partner_id).values(**values)
        )

    async def replace_secret_hash(self, partner_id: str, expected: str | None, secret_hash: str) -> bool:
        """Swap the stored client-secret hash if it is still ``expected`` (a re-hash never
        undoes a secret rotated meanwhile); True when it was swapped."""
        result = await self._connection.execute(
            partners.update()
            .where(partners.c.partner_id == partner_id, partners.c.client_secret_hash == expected)
            .values(client_secret_hash=secret_hash)
        )
        return bool(result.rowcount)

    async def get(self, partner_id: str, *, for_update: bool = False) -> Partner | None:
        """A partner by id (row-locked when about to change it)."""
        query = sa.select(partners).where(partners.c.partner_id == partner_id)
        row = (await self._connection.execute(query.with_for_update() if for_update else query)).first()
        return self._from_row(row) if row else None

    async def by_client_id(self, client_id: str) -> Partner | None:
        """A partner by OAuth client id."""
        row = (await self._connection.execute(sa.select(partners).where(partners.c.client_id == client_id))).first()
        return self._from_row(row) if row else None

    async def page(self, *, status: str | None, after: tuple[dt.datetime, str] | None, limit: int) -> list[Partner]:
        """Oldest first, keyset-paginated on (created_at, partner_id)."""
        query = sa.select(partners)
        if status:
            query = query.where(partners.c.status == status)
        if after:
            created, partner_id = after
            query = query.where(
                sa.or_(
                    partners.c.created_at > created,
                    sa.and_(partners.c.created_at == created, partners.c.partner_id > partner_id),
                )
            )
        query = query.order_by(partners.c.created_at, partners.c.partner_id).limit(limit)
        return [self._from_row(row) for row in await self._connection.execute(query)]


class CustomerRepository:
    """Customers and their credentials."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    @staticmethod
    def _from_row(row: Any) -> Customer:
        return Customer(
            customer_id=row.customer_id,
            username=row.username,
            display_name=row.display_name,
            status=CustomerStatus(row.status),
            password_hash=row.password_hash,
            sealed_totp_seed=bytes(row.sealed_totp_seed),
            failed_attempts=row.failed_attempts,
            last_totp_step=row.last_totp_step,
            created_at=_required(row.created_at),
            updated_at=_required(row.updated_at),
        )

    async def page(self, *, username_prefix: str, after: tuple[dt.datetime, str] | None, limit: int) -> list[Customer]:
        """Oldest first, keyset-paginated on (created_at, customer_id)."""
        query = sa.select(customers)
        if username_prefix:
            query = query.where(customers.c.username.startswith(username_prefix, autoescape=True))
        if after:
            created, customer_id = after
            query = query.where(
                sa.or_(
                    customers.c.created_at > created,
                    sa.and_(customers.c.created_at == created, customers.c.customer_id > customer_id),
                )
            )
        query = query.order_by(customers.c.created_at, customers.c.customer_id).limit(limit)
        return [self._from_row(row) for row in await self._connection.execute(query)]

    async def add(self, customer: Customer) -> None:
        """Store a new customer."""
        await self._connection.execute(
            customers.insert().values(
                customer_id=customer.customer_id,
                username=customer.username,
                display_name=customer.display_name,
                status=customer.status.value,
                password_hash=customer.password_hash,
                sealed_totp_seed=customer.sealed_totp_seed,
                failed_attempts=customer.failed_attempts,
                last_totp_step=customer.last_totp_step,
                created_at=customer.created_at,
                updated_at=customer.updated_at,
            )
        )

    async def save(self, customer: Customer) -> None:
        """Persist status, counters and the last used TOTP step."""
        await self._connection.execute(
            customers.update()
            .where(customers.c.customer_id == customer.customer_id)
            .values(
                status=customer.status.value,
                failed_attempts=customer.failed_attempts,
                last_totp_step=customer.last_totp_step,
                updated_at=customer.updated_at,
            )
        )

    async def set_password(self, customer_id: str, password_hash: str, now: dt.datetime) -> None:
        """The customer's own password (its activation after an account opened through a partner)."""
        await self._connection.execute(
            customers.update()
            .where(customers.c.customer_id == customer_id)
            .values(password_hash=password_hash, updated_at=now)
        )

    async def get(self, customer_id: str) -> Customer | None:
        """A customer by id."""
        query = sa.select(customers).where(customers.c.customer_id == customer_id)
        row = (await self._connection.execute(query)).first()
        return self._from_row(row) if row else None

    async def by_username(self, username: str) -> Customer | None:
        """A customer by login name, locked for update (two SCAs must not share a code)."""
        query = sa.select(customers).where(customers.c.username == username).with_for_update()
        row = (await self._connection.execute(query)).first()
        return self._from_row(row) if row else None


class ConsentRepository:
    """Consents."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    @staticmethod
    def _values(consent: Consent) -> dict[str, Any]:
        return {
            "consent_id": consent.consent_id,
            "partner_id": consent.partner_id,
            "customer_id": consent.customer_id,
            "state": consent.state.value,
            "paused": consent.paused,
            "permissions": " ".join(sorted(consent.permissions)),
            "account_ids": " ".join(consent.account_ids),
            "expires_at": consent.expires_at,
            "per_payment_currency": consent.per_payment_limit.currency if consent.per_payment_limit else None,
            "per_payment_minor": consent.per_payment_limit.minor_units if consent.per_payment_limit else None,
            "period_limit_currency": consent.period_limit.currency if consent.period_limit else None,
            "period_limit_minor": consent.period_limit.minor_units if consent.period_limit else None,
            "period": consent.period,
            "reads_per_day": consent.reads_per_day,
            "code_challenge": consent.code_challenge,
            "created_at": consent.created_at,
            "updated_at": consent.updated_at,
            "authorised_at": consent.authorised_at,
            "mandate": consent.mandate.to_json() if consent.mandate else None,
        }

    @staticmethod
    def _from_row(row: Any) -> Consent:
        return Consent(
            consent_id=row.consent_id,
            partner_id=row.partner_id,
            customer_id=row.customer_id,
            state=ConsentState(row.state),
            paused=bool(row.paused),
            permissions=frozenset(_split(row.permissions)),
            account_ids=_split(row.account_ids),
            expires_at=_required(row.expires_at),
            per_payment_limit=_amount(row.per_payment_currency, row.per_payment_minor),
            period_limit=_amount(row.period_limit_currency, row.period_limit_minor),
            period=row.period,
            reads_per_day=row.reads_per_day,
            code_challenge=row.code_challenge,
            created_at=_required(row.created_at),
            updated_at=_required(row.updated_at),
            authorised_at=as_utc(row.authorised_at),
            mandate=Mandate.from_json(row.mandate) if row.mandate else None,
        )

    async def add(self, consent: Consent) -> None:
        """Store a new consent."""
        await self._connection.execute(consents.insert().values(**self._values(consent)))

    async def save(self, consent: Consent) -> None:
        """Persist a changed consent."""
        values = self._values(consent)
        del values["consent_id"]
        await self._connection.execute(
            consents.update().where(consents.c.consent_id == consent.consent_id).values(**values)
        )

    async def get(self, consent_id: str, *, for_update: bool = False) -> Consent | None:
        """A consent by id (row-locked when about to change it)."""
        query = sa.select(consents).where(consents.c.consent_id == consent_id)
        row = (await self._connection.execute(query.with_for_update() if for_update else query)).first()
        return self._from_row(row) if row else None

    async def page_for_customer(
        self,
        customer_id: str,
        *,
        state: str | None,
        now: dt.datetime,
        after: tuple[dt.datetime, str] | None,
        limit: int,
    ) -> list[Consent]:
        """A customer's consents, newest first, keyset-paginated on (created_at, consent_id).

        The state filter means the state as of ``now``: a live consent past its expiry is EXPIRED.
        """
        query = sa.select(consents).where(consents.c.customer_id == customer_id)
        live = (ConsentState.AWAITING_AUTHORISATION.value, ConsentState.AUTHORISED.value)
        if state == ConsentState.EXPIRED.value:
            query = query.where(
                sa.or_(consents.c.state == state, sa.and_(consents.c.state.in_(live), consents.c.expires_at <= now))
            )
        elif state in live:
            query = query.where(consents.c.state == state, consents.c.expires_at > now)
        elif state:
            query = query.where(consents.c.state == state)
        if after:
            created, consent_id = after
            query = query.where(
                sa.or_(
                    consents.c.created_at < created,
                    sa.and_(consents.c.created_at == created, consents.c.consent_id < consent_id),
                )
            )
        query = query.order_by(consents.c.created_at.desc(), consents.c.consent_id.desc()).limit(limit)
        return [self._from_row(row) for row in await self._connection.execute(query)]


class GrantRepository:
    """Authorization codes, refresh tokens, issued access tokens and seen client assertions."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add_code(self, code: AuthorizationCode) -> None:
        """Store a new authorization code (its digest)."""
        await self._connection.execute(
            authorization_codes.insert().values(
                code_hash=code.code_hash,
                consent_id=code.consent_id,
                partner_id=code.partner_id,
                customer_id=code.customer_id,
                code_challenge=code.code_challenge,
                expires_at=code.expires_at,
                used_at=code.used_at,
            )
        )

    async def code(self, code_hash: str) -> AuthorizationCode | None:
        """An authorization code by digest."""
        query = sa.select(authorization_codes).where(authorization_codes.c.code_hash == code_hash)
        row = (await self._connection.execute(query)).first()
        if row is None:
            return None
        return AuthorizationCode(
            code_hash=row.code_hash,
            consent_id=row.consent_id,
            partner_id=row.partner_id,
            customer_id=row.customer_id,
            code_challenge=row.code_challenge,
            expires_at=_required(row.expires_at),
            used_at=as_utc(row.used_at),
        )

    async def mark_code_used(self, code_hash: str, now: dt.datetime) -> bool:
        """Consume a code; False when someone else consumed it first (compare-and-set)."""
        result = await self._connection.execute(
            authorization_codes.update()
            .where(authorization_codes.c.code_hash == code_hash, authorization_codes.c.used_at.is_(None))
            .values(used_at=now)
        )
        return (result.rowcount or 0) == 1

    async def add_refresh_token(self, token: RefreshToken) -> None:
        """Store a new refresh token (its digest)."""
        await self._connection.execute(
            refresh_tokens.insert().values(
                token_hash=token.token_hash,
                family_id=token.family_id,
                partner_id=token.partner_id,
                client_id=token.client_id,
                consent_id=token.consent_id,
                customer_id=token.customer_id,
                scopes=" ".join(token.scopes),
                issued_at=token.issued_at,
                expires_at=token.expires_at,
                used_at=token.used_at,
                revoked_at=token.revoked_at,
            )
        )

    async def refresh_token(self, token_hash: str) -> RefreshToken | None:
        """A refresh token by digest."""
        query = sa.select(refresh_tokens).where(refresh_tokens.c.token_hash == token_hash)
        row = (await self._connection.execute(query)).first()
        if row is None:
            return None
        return RefreshToken(
            token_hash=row.token_hash,
            family_id=row.family_id,
            partner_id=row.partner_id,
            client_id=row.client_id,
            consent_id=row.consent_id,
            customer_id=row.customer_id,
            scopes=_split(row.scopes),
            issued_at=_required(row.issued_at),
            expires_at=_required(row.expires_at),
            used_at=as_utc(row.used_at),
            revoked_at=as_utc(row.revoked_at),
        )

    async def mark_refresh_token_used(self, token_hash: str, now: dt.datetime) -> bool:
        """Consume a refresh token; False when it was already used (compare-and-set)."""
        result = await self._connection.execute(
            refresh_tokens.update()
            .where(refresh_tokens.c.token_hash == token_hash, refresh_tokens.c.used_at.is_(None))
            .values(used_at=now)
        )
        return (result.rowcount or 0) == 1

    async def add_access_token(self, token: IssuedToken) -> None:
        """Record an issued access token."""
        await self._connection.execute(
            access_tokens.insert().values(
                jti=token.jti,
                client_id=token.client_id,
                partner_id=token.partner_id,
                consent_id=token.consent_id,
                family_id=token.family_id,
                issued_at=token.issued_at,
                expires_at=token.expires_at,
                revoked_at=token.revoked_at,
            )
        )

    async def access_token(self, jti: str) -> IssuedToken | None:
        """An issued access token by id."""
        row = (await self._connection.execute(sa.select(access_tokens).where(access_tokens.c.jti == jti))).first()
        return None if row is None else _issued_token(row)

    async def access_tokens(self, jtis: Sequence[str]) -> dict[str, IssuedToken]:
        """Issued access tokens by id, those that exist (a batched status check's)."""
        found: dict[str, IssuedToken] = {}
        for start in range(0, len(jtis), 500):
            query = sa.select(access_tokens).where(access_tokens.c.jti.in_(jtis[start : start + 500]))
            for row in await self._connection.execute(query):
                found[row.jti] = _issued_token(row)
        return found

    async def revoke_access_tokens(
        self, now: dt.datetime, *, jti: str | None = None, family_id: str | None = None, consent_id: str | None = None
    ) -> list[str]:
        """Revoke the live access tokens matching one criterion; returns their ids."""
        condition = (
            access_tokens.c.jti == jti
            if jti is not None
            else access_tokens.c.family_id == family_id
            if family_id is not None
            else access_tokens.c.consent_id == consent_id
        )
        live = sa.and_(condition, access_tokens.c.revoked_at.is_(None), access_tokens.c.expires_at > now)
        ids = [row.jti for row in await self._connection.execute(sa.select(access_tokens.c.jti).where(live))]
        if ids:
            await self._connection.execute(
                access_tokens.update().where(access_tokens.c.jti.in_(ids)).values(revoked_at=now)
            )
        return ids

    async def revoke_refresh_tokens(
        self,
        now: dt.datetime,
        *,
        family_id: str | None = None,
        consent_id: str | None = None,
        token_hash: str | None = None,
    ) -> None:
        """Revoke refresh tokens of a family, a consent, or one token."""
        condition = (
            refresh_tokens.c.token_hash == token_hash
            if token_hash is not None
            else refresh_tokens.c.family_id == family_id
            if family_id is not None
            else refresh_tokens.c.consent_id == consent_id
        )
        await self._connection.execute(
            refresh_tokens.update().where(condition, refresh_tokens.c.revoked_at.is_(None)).values(revoked_at=now)
        )

    async def purge_expired(self, now: dt.datetime, access_tokens_before: dt.datetime) -> int:
        """Delete expired codes, refresh tokens, assertion ids and old access-token records."""
        removed = 0
        for statement in (
            authorization_codes.delete().where(authorization_codes.c.expires_at < now),
            refresh_tokens.delete().where(refresh_tokens.c.expires_at < now),
            client_assertions.delete().where(client_assertions.c.expires_at < now),
            access_tokens.delete().where(access_tokens.c.expires_at < access_tokens_before),
        ):
            result = await self._connection.execute(statement)
            removed += result.rowcount or 0
        return removed

    async def remember_assertion(self, client_id: str, jti: str, expires_at: dt.datetime, now: dt.datetime) -> bool:
        """Record a client assertion's jti; False if it was seen before (a replay)."""
        await self._connection.execute(client_assertions.delete().where(client_assertions.c.expires_at < now))
        query = sa.select(client_assertions.c.jti).where(
            client_assertions.c.client_id == client_id, client_assertions.c.jti == jti
        )
        if (await self._connection.execute(query)).first() is not None:
            return False
        await self._connection.execute(
            client_assertions.insert().values(client_id=client_id, jti=jti, expires_at=expires_at)
        )
        return True


def _issued_token(row: Any) -> IssuedToken:
    return IssuedToken(
        jti=row.jti,
        client_id=row.client_id,
        partner_id=row.partner_id,
        consent_id=row.consent_id,
        family_id=row.family_id,
        issued_at=_required(row.issued_at),
        expires_at=_required(row.expires_at),
        revoked_at=as_utc(row.revoked_at),
    )
