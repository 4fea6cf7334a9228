"""Identity's unit of work: one transaction, its repositories."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.audit import AuditRepository
from meshlib.idempotency import IdempotencyRepository
from meshlib.storage import Database, SqlUnitOfWork
from services.identity.authorization_repository import AuthorizationRequestRepository
from services.identity.decoupled_repository import DecoupledRepository
from services.identity.event_repository import HeadsNotifier, PartnerEventRepository
from services.identity.onboarding_repository import ApplicationRepository
from services.identity.repository import (
    ConsentRepository,
    CustomerRepository,
    GrantRepository,
    PartnerRepository,
    SigningKeyRepository,
)
from services.identity.tables import audit, idempotency_keys

log = logging.getLogger("identity")


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class IdentityUnitOfWork(SqlUnitOfWork):
    """Binds identity's repositories to one transaction."""

    signing_keys: SigningKeyRepository
    idempotency: IdempotencyRepository
    partners: PartnerRepository
    customers: CustomerRepository
    consents: ConsentRepository
    grants: GrantRepository
    authorization_requests: AuthorizationRequestRepository
    decoupled: DecoupledRepository
    audit: AuditRepository
    partner_events: PartnerEventRepository
    applications: ApplicationRepository

    def __init__(
        self,
        database: Database,
        *,
        read_only: bool = False,
        notify: HeadsNotifier | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        super().__init__(database, read_only=read_only)
        # Told which partners' event logs grew, after commit (the stream fan-out).
        self._notify = notify
        self._clock = clock

    def _bind(self, connection: AsyncConnection) -> None:
        self.signing_keys = SigningKeyRepository(connection)
        self.idempotency = IdempotencyRepository(connection, idempotency_keys)
        self.partners = PartnerRepository(connection)
        self.customers = CustomerRepository(connection)
        self.consents = ConsentRepository(connection)
        self.grants = GrantRepository(connection)
        self.authorization_requests = AuthorizationRequestRepository(connection)
        self.decoupled = DecoupledRepository(connection)
        self.audit = AuditRepository(connection, audit, "identity")
        self.partner_events = PartnerEventRepository(connection, self._clock)
        self.applications = ApplicationRepository(connection)
        self.before_commit(self.audit.flush)
        self.before_commit(self.partner_events.flush)

    async def commit(self) -> None:
        """Commit, then tell the fan-out which partners' logs grew (a lost notice is caught by
        its periodic sweep)."""
        await super().commit()
        heads = self.partner_events.appended_heads
        if heads and self._notify is not None:
            try:
                await self._notify(dict(heads))
            except Exception:
                log.warning("could not announce new partner events", exc_info=True)
