"""Partner administration use cases (operators, scope identity:admin)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from meshlib.errors import NotFound
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size, time_and_id
from meshlib.storage import Codec, IdempotencyKey, Transactions
from services.identity.common import Clock, EventPublisher, Saved, UnitOfWorkFactory
from services.identity.domain import partners as rules
from services.identity.domain.partners import AuthMethod, Partner, PartnerChanges, PartnerRegistration
from services.identity.domain.secrets import ClientSecretHasher, new_secret
from services.identity.unit_of_work import IdentityUnitOfWork

log = logging.getLogger("identity.partners")


@dataclass(frozen=True)
class PartnerWithSecret:
    """A partner and its freshly generated client secret (shown once; empty otherwise)."""

    partner: Partner
    client_secret: str


class PartnerService:
    """Register, read, update, suspend, reactivate partners and rotate their secrets."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        client_secrets: ClientSecretHasher,
        known_tiers: frozenset[str],
        events: EventPublisher,
        clock: Clock,
    ) -> None:
        self._uow = uow
        self._tx = Transactions(uow, clock=clock)
        self._secrets = client_secrets
        self._tiers = known_tiers
        self._events = events
        self._clock = clock

    async def register(
        self, key: IdempotencyKey, codec: Codec[PartnerWithSecret | Saved], request: PartnerRegistration
    ) -> PartnerWithSecret | Saved:
        """A new ACTIVE partner; its client secret is returned once and stored only hashed."""
        now = self._clock()
        partner = rules.register(request, self._tiers, now, client_secret_hash=None)
        secret = ""
        if partner.auth_method is AuthMethod.CLIENT_SECRET_POST:
            secret = new_secret()
            partner = replace(partner, client_secret_hash=self._secrets.hash(secret))

        async def add(uow: IdentityUnitOfWork) -> PartnerWithSecret:
            await uow.partners.add(partner)
            _audit(uow, "partner.register", partner)
            return PartnerWithSecret(partner, secret)

        result = await self._tx.run(add, key=key, codec=codec)
        if isinstance(result, PartnerWithSecret):
            log.info("partner registered", extra={"partner_id": partner.partner_id, "client_id": partner.client_id})
        return result

    async def get(self, partner_id: str) -> Partner:
        """A partner; NOT_FOUND if unknown."""
        async with self._uow(read_only=True) as uow:
            return await _existing(uow, partner_id)

    async def list(self, *, status: str | None, requested_size: int, page_token: str) -> tuple[list[Partner], str]:
        """Oldest first; returns the page and the next page token ('' at the end)."""
        size = page_size(requested_size)
        filters = filter_fingerprint(status=status)
        after = time_and_id(decode_page_token(page_token, filters))
        async with self._uow(read_only=True) as uow:
            found = await uow.partners.page(status=status, after=after, limit=size + 1)
        page, more = found[:size], len(found) > size
        token = ""
        if more:
            token = encode_page_token({"t": page[-1].created_at.isoformat(), "id": page[-1].partner_id}, filters)
        return page, token

    async def update(
        self, key: IdempotencyKey, codec: Codec[Partner | Saved], partner_id: str, changes: PartnerChanges
    ) -> Partner | Saved:
        """Apply the set fields."""
        return await self._change(
            key,
            codec,
            partner_id,
            lambda partner, now: rules.apply_changes(partner, changes, self._tiers, now),
            action="partner.update",
        )

    async def suspend(self, key: IdempotencyKey, codec: Codec[Partner | Saved], partner_id: str) -> Partner | Saved:
        """Suspend: every call and every token of the partner fails from the next call on."""
        result = await self._change(
            key, codec, partner_id, lambda partner, now: partner.suspend(now), action="partner.suspend"
        )
        if isinstance(result, Partner):
            log.info("partner suspended", extra={"partner_id": partner_id})
        return result

    async def reactivate(self, key: IdempotencyKey, codec: Codec[Partner | Saved], partner_id: str) -> Partner | Saved:
        """Allow the partner again (its old tokens stay dead)."""
        return await self._change(
            key, codec, partner_id, lambda partner, now: partner.reactivate(now), action="partner.reactivate"
        )

    async def _change(
        self,
        key: IdempotencyKey,
        codec: Codec[Partner | Saved],
        partner_id: str,
        change: Callable[[Partner, dt.datetime], Partner],
        *,
        action: str,
    ) -> Partner | Saved:
        """Apply ``change`` to the stored partner under its lock, idempotently; publish the new status."""

        async def operation(uow: IdentityUnitOfWork) -> Partner:
            partner = change(await _existing(uow, partner_id), self._clock())
            await uow.partners.save(partner)
            _audit(uow, action, partner)
            return partner

        result = await self._tx.run(operation, key=key, codec=codec)
        if isinstance(result, Partner):
            await self._events.publish("partner", partner_id, result.status.value)
        return result

    async def rotate_secret(
        self, key: IdempotencyKey, codec: Codec[PartnerWithSecret | Saved], partner_id: str
    ) -> PartnerWithSecret | Saved:
        """A new client secret; the old one stops working at once."""
        secret = new_secret()
        secret_hash = self._secrets.hash(secret)

        async def operation(uow: IdentityUnitOfWork) -> PartnerWithSecret:
            partner = (await _existing(uow, partner_id)).with_secret_hash(secret_hash, self._clock())
            await uow.partners.save(partner)
            _audit(uow, "partner.rotate_secret", partner)
            return PartnerWithSecret(partner, secret)

        return await self._tx.run(operation, key=key, codec=codec)


def _audit(uow: IdentityUnitOfWork, action: str, partner: Partner) -> None:
    """The change in the audit trail, by the operator calling (never the secret or its hash)."""
    uow.audit.record(
        action,
        f"partners/{partner.partner_id}",
        partner_id=partner.partner_id,
        details={
            "status": partner.status.value,
            "allowed_scopes": sorted(partner.allowed_scopes),
            "rate_limit_tier": partner.rate_limit_tier,
            "auth_method": partner.auth_method.value,
        },
    )


async def _existing(uow: IdentityUnitOfWork, partner_id: str) -> Partner:
    partner = await uow.partners.get(partner_id, for_update=not uow.read_only)
    if partner is None:
        raise NotFound("partner not found", metadata={"resource_name": f"partners/{partner_id}"})
    return partner
