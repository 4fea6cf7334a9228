"""Customer use cases: creation, listing, strong customer authentication (SCA), lock-out, unlock."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass

from meshlib import totp
from meshlib.errors import AlreadyExists, InvalidArgument, MeshError, NotFound
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size, time_and_id
from meshlib.storage import Codec, CommitAndRaise, IdempotencyKey, Transactions
from services.identity.common import Clock, Saved, UnitOfWorkFactory
from services.identity.domain import customers as rules
from services.identity.domain.customers import Customer, CustomerStatus
from services.identity.domain.secrets import SecretBox, SecretHasher
from services.identity.unit_of_work import IdentityUnitOfWork

log = logging.getLogger("identity.customers")
# A prefix of a username (domain.customers: 3..64 characters of a-z 0-9 . _ -).
_USERNAME_PREFIX = re.compile(r"^[a-z0-9._-]{0,64}$")


@dataclass(frozen=True)
class NewCustomer:
    """A created customer and its TOTP seed (shown once)."""

    customer: Customer
    totp_seed: bytes


class StrongCustomerAuthentication:
    """Password + TOTP check with lock-out; shared by AuthenticateCustomer and AuthoriseConsent.

    ``check`` records the outcome in the caller's transaction and *returns* the failure
    instead of raising it, so the caller can commit the failed-attempt counter first.
    """

    def __init__(self, hasher: SecretHasher, box: SecretBox, clock: Clock) -> None:
        self._hasher = hasher
        self._box = box
        self._clock = clock

    async def check(self, uow: IdentityUnitOfWork, username: str, password: str, code: str) -> Customer | MeshError:
        """The authenticated customer, or the error to raise after committing."""
        rules.check_credentials_shape(username, password, code)
        now = self._clock()
        customer = await uow.customers.by_username(username)
        # Always pay for one Argon2 verification so timing does not reveal unknown usernames.
        password_ok = await asyncio.to_thread(
            self._hasher.verify, customer.password_hash if customer else None, password
        )
        if customer is None:
            return rules.sca_failed()
        try:
            customer.require_unlocked()
        except MeshError as locked:
            return locked
        seed = self._box.open(customer.sealed_totp_seed, context=customer.customer_id.encode())
        step = totp.matching_step(seed, code, now.timestamp(), last_used_step=customer.last_totp_step)
        if not password_ok or step is None:
            failed = customer.failed(now)
            await uow.customers.save(failed)
            if failed.status is CustomerStatus.LOCKED and customer.status is not CustomerStatus.LOCKED:
                uow.audit.record(
                    "customer.lock",
                    f"customers/{customer.customer_id}",
                    outcome=failed.status.value,
                    customer_id=customer.customer_id,
                    details={"failed_attempts": failed.failed_attempts},
                )
            log.info(
                "strong customer authentication failed",
                extra={
                    "customer_id": customer.customer_id,
                    "failed_attempts": failed.failed_attempts,
                    "locked": failed.status is CustomerStatus.LOCKED,
                },
            )
            return rules.sca_failed()
        authenticated = customer.succeeded(step, now)
        await uow.customers.save(authenticated)
        return authenticated


class CustomerService:
    """Create, read, authenticate and unlock customers."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        hasher: SecretHasher,
        box: SecretBox,
        sca: StrongCustomerAuthentication,
        clock: Clock,
        *,
        sandbox: bool = False,
    ) -> None:
        self._uow = uow
        self._tx = Transactions(uow, clock=clock)
        self._hasher = hasher
        self._box = box
        self._sca = sca
        self._sandbox = sandbox
        self._clock = clock

    async def create(
        self,
        key: IdempotencyKey,
        codec: Codec[NewCustomer | Saved],
        username: str,
        password: str,
        display_name: str,
        totp_secret: str = "",
    ) -> NewCustomer | Saved:
        """A new ACTIVE customer with an Argon2id password hash and an encrypted TOTP seed (a
        chosen one only in a sandbox: test customers published with their secret)."""
        rules.check_new_customer(username, password, display_name)
        seed = self._chosen_seed(totp_secret) if totp_secret else totp.new_totp_secret()
        now = self._clock()
        password_hash = await asyncio.to_thread(self._hasher.hash, password)
        customer_id = rules.new_customer_id()
        sealed = self._box.seal(seed, context=customer_id.encode())
        customer = Customer.new(customer_id, username, display_name, password_hash, sealed, now)

        async def add(uow: IdentityUnitOfWork) -> NewCustomer:
            if await uow.customers.by_username(username) is not None:
                raise AlreadyExists("the username is taken", reason="RESOURCE_ALREADY_EXISTS")
            await uow.customers.add(customer)
            uow.audit.record(
                "customer.create", f"customers/{customer_id}", customer_id=customer_id, details={"username": username}
            )
            return NewCustomer(customer, seed)

        return await self._tx.run(add, key=key, codec=codec)

    def _chosen_seed(self, totp_secret: str) -> bytes:
        if not self._sandbox:
            raise InvalidArgument.field("totp_secret", "only a sandbox deployment accepts a chosen TOTP secret")
        try:
            seed = totp.from_base32(totp_secret)
        except ValueError:
            seed = b""
        if not 16 <= len(seed) <= 64:
            raise InvalidArgument.field("totp_secret", "must be base32 of 16 to 64 bytes")
        return seed

    async def get(self, customer_id: str) -> Customer:
        """A customer; NOT_FOUND if unknown."""
        async with self._uow(read_only=True) as uow:
            return await _existing(uow, customer_id)

    async def list(self, username_prefix: str, requested_size: int, page_token: str) -> tuple[list[Customer], str]:
        """Customers oldest first (optionally by username prefix); the next page token ('' at the end)."""
        if not _USERNAME_PREFIX.match(username_prefix):
            raise InvalidArgument.field("username_prefix", "up to 64 characters of [a-z0-9._-]")
        size = page_size(requested_size)
        filters = filter_fingerprint(username_prefix=username_prefix)
        after = time_and_id(decode_page_token(page_token, filters))
        async with self._uow(read_only=True) as uow:
            found = await uow.customers.page(username_prefix=username_prefix, after=after, limit=size + 1)
        page, more = found[:size], len(found) > size
        token = ""
        if more:
            token = encode_page_token({"t": page[-1].created_at.isoformat(), "id": page[-1].customer_id}, filters)
        return page, token

    async def authenticate(
        self, key: IdempotencyKey, codec: Codec[Customer | Saved], username: str, password: str, code: str
    ) -> Customer | Saved:
        """SCA; every failure counts towards the lock-out."""

        async def operation(uow: IdentityUnitOfWork) -> Customer:
            outcome = await self._sca.check(uow, username, password, code)
            if isinstance(outcome, MeshError):
                raise CommitAndRaise(outcome)  # the failed attempt counts
            return outcome

        return await self._tx.run(operation, key=key, codec=codec)

    async def unlock(self, key: IdempotencyKey, codec: Codec[Customer | Saved], customer_id: str) -> Customer | Saved:
        """Operator unlock."""

        async def operation(uow: IdentityUnitOfWork) -> Customer:
            customer = (await _existing(uow, customer_id)).unlock(self._clock())
            await uow.customers.save(customer)
            uow.audit.record(
                "customer.unlock", f"customers/{customer_id}", outcome=customer.status.value, customer_id=customer_id
            )
            return customer

        return await self._tx.run(operation, key=key, codec=codec)


async def _existing(uow: IdentityUnitOfWork, customer_id: str) -> Customer:
    customer = await uow.customers.get(customer_id)
    if customer is None:
        raise NotFound("customer not found", metadata={"resource_name": f"customers/{customer_id}"})
    return customer
