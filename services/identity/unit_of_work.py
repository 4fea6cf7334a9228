"""Identity's unit of work: one transaction, its repositories."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.audit import AuditRepository
from meshlib.idempotency import IdempotencyRepository
from meshlib.storage import SqlUnitOfWork
from services.identity.authorization_repository import AuthorizationRequestRepository
from services.identity.decoupled_repository import DecoupledRepository
from services.identity.repository import (
    ConsentRepository,
    CustomerRepository,
    GrantRepository,
    PartnerRepository,
    SigningKeyRepository,
)
from services.identity.tables import audit, idempotency_keys


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
        self.before_commit(self.audit.flush)
