"""The account service's wiring: the one place that builds its adapters and service layer."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from meshlib.app import Runtime, ServiceSpec, Wiring
from meshlib.auth.consent import ConsentLookup
from meshlib.auth.wiring import IdentityPeers, identity_peers
from meshlib.event_intake import identity_intake
from meshlib.outbox import RelayLoop, relay_loop
from meshlib.periodic import Periodic
from meshlib.server import Lifecycle, ServiceRegistration
from meshlib.storage.idempotent import utc_now
from openbank.account.v1 import account_admin_pb2_grpc, account_pb2_grpc, customer_account_pb2_grpc, ledger_pb2_grpc
from services.account.admin_service import AccountAdminService
from services.account.credit_events import SqlCreditOutbox
from services.account.credit_events import intake_event as credit_event
from services.account.credit_service import CreditService
from services.account.credit_wiring import credit_wiring
from services.account.customer_accounts import CustomerAccounts, CustomerAccountServicer
from services.account.event_relay import SqlMovementOutbox
from services.account.event_relay import intake_event as movement_event
from services.account.ledger_service import LedgerService, UowFactory
from services.account.read_activity import ReadActivity
from services.account.read_service import AccountReadService
from services.account.servicer import AccountAdminServicer, AccountServicer, LedgerServicer
from services.account.settings import AccountSettings
from services.account.tables import audit as audit_tables
from services.account.unit_of_work import AccountUnitOfWork

log = logging.getLogger("services.account")

CONSENT_READ_SCOPE = "consents:read"
# Asks identity about tokens, consents and partners the bus has not announced (revocation).
INTROSPECT_SCOPE = "tokens:introspect"

VERSIONS_DIR = Path(__file__).parent / "migrations" / "versions"

# A consent lookup of the test's own (no bus to start or stop).
ConsentLookupFactory = Callable[[Runtime], ConsentLookup]


@dataclass(frozen=True)
class AccountComponents:
    """The account service's layers, as its wiring built them (for its hooks and for tests)."""

    ledger: LedgerService
    admin: AccountAdminService
    reads: AccountReadService
    uow: UowFactory
    read_activity: ReadActivity
    credit: CreditService | None = None


def identity_consents(runtime: Runtime) -> IdentityPeers:
    """The identity-backed consent lookup and revocation cache (service token, caches
    invalidated over ``bus``, which the service starts and closes).

    Without internal client credentials consent-bound reads answer UNAVAILABLE.
    """
    settings: AccountSettings = runtime.settings
    return identity_peers(
        runtime.channel(settings.identity_target),
        client_id=settings.service_client_id,
        client_secret=settings.service_client_secret,
        redis_url=settings.redis_url,
        channel=settings.invalidation_channel,
        stream_recheck_bus_up_seconds=settings.stream_recheck_seconds_bus_up,
        scopes=[CONSENT_READ_SCOPE, INTROSPECT_SCOPE],
    )


def event_relays(runtime: Runtime, uow: UowFactory) -> list[RelayLoop[Any]]:
    """account's outboxes relayed to identity's partner event log through one peer (one token
    source, ``events:write``): the movements (purged after the retention period) and the credit
    offers' and lines' (kept); none when switched off or without internal client credentials
    (the rows wait in the outboxes)."""
    settings: AccountSettings = runtime.settings
    events = identity_intake(
        runtime, enabled=settings.event_relay, deadline_seconds=settings.event_relay_deadline_seconds
    )
    if events is None:
        return []
    movements = SqlMovementOutbox(uow)
    return [
        relay_loop(
            "account-events", movements, events.sink(movement_event), settings, clock=utc_now, purge=movements.purge
        ),
        relay_loop("credit-events", SqlCreditOutbox(uow), events.sink(credit_event), settings, clock=utc_now),
    ]


class HoldExpiryLoop:
    """Releases elapsed holds in the background (posts and voids also release them lazily).

    Once an hour it also purges idempotency answers past their retention and old read
    counters.
    """

    def __init__(
        self, ledger: LedgerService, interval_seconds: float, batch_size: int, *, purge_every_seconds: float = 3600
    ) -> None:
        self._ledger = ledger
        self._batch_size = batch_size
        self._purge_every = purge_every_seconds
        self._last_purge = float("-inf")
        self._periodic = Periodic("hold-expiry", interval_seconds, self._sweep)

    async def start(self) -> None:
        """Start sweeping."""
        await self._periodic.start()

    async def stop(self) -> None:
        """Stop sweeping (an in-flight expiry transaction is cancelled and rolls back)."""
        await self._periodic.stop()

    async def _sweep(self) -> None:
        while True:
            released = await self._ledger.expire_due(self._batch_size)
            if released:
                log.info("expired holds released", extra={"count": released})
            if released < self._batch_size:
                break  # a full batch means more may be due: sweep again at once
        if time.monotonic() - self._last_purge >= self._purge_every:
            self._last_purge = time.monotonic()
            purged = await self._ledger.purge_old_records()
            if purged:
                log.info("old idempotency keys and read counters purged", extra={"count": purged})


async def wire(runtime: Runtime, *, consent_lookup: ConsentLookupFactory | None = None) -> Wiring[AccountComponents]:
    """Build the account service's layers on the runtime's database.

    Consents are checked with identity (:func:`identity_consents`) unless a test passes its
    own ``consent_lookup``.
    """
    settings: AccountSettings = runtime.settings
    uow = partial(AccountUnitOfWork, runtime.database)
    ledger = LedgerService(uow)
    admin = AccountAdminService(uow, ledger)
    expiry = HoldExpiryLoop(ledger, settings.hold_expiry_interval_seconds, settings.hold_expiry_batch_size)
    # Reads counted for the customer's dashboard, saved every few seconds (and at shutdown).
    activity = ReadActivity(uow, settings.read_activity_flush_seconds)
    lifecycle = Lifecycle(on_start=[expiry.start, activity.start], on_stop=[expiry.stop, activity.stop])
    for relay in event_relays(runtime, uow):
        lifecycle.on_start.append(relay.start)
        lifecycle.on_stop.append(relay.stop)
    if consent_lookup is None:
        peers = identity_consents(runtime)
        consents = peers.consents
        # Every token this process accepts is checked for revocation here too, not only at the
        # gateway (calls may come straight from inside the mesh).
        runtime.verifier.revocation = peers.revocation
        lifecycle.on_start.append(peers.start)
        lifecycle.on_stop.append(peers.bus.close)
    else:
        consents = consent_lookup(runtime)
    reads = AccountReadService(uow, consents, activity=activity)
    # Credit lines (issue 28 item 2): offers, acceptance, the daily accrual job.
    credit = credit_wiring(uow, consents)
    lifecycle.on_start.extend(credit.on_start)
    lifecycle.on_stop.extend(credit.on_stop)
    return Wiring(
        components=AccountComponents(
            ledger=ledger, admin=admin, reads=reads, uow=uow, read_activity=activity, credit=credit.service
        ),
        registrations=[
            ServiceRegistration(
                "openbank.account.v1.LedgerService",
                LedgerServicer(ledger),
                ledger_pb2_grpc.add_LedgerServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.account.v1.AccountAdminService",
                AccountAdminServicer(admin, ledger),
                account_admin_pb2_grpc.add_AccountAdminServiceServicer_to_server,
            ),
            ServiceRegistration(
                "openbank.account.v1.AccountService",
                AccountServicer(reads),
                account_pb2_grpc.add_AccountServiceServicer_to_server,
            ),
            # The bank's web app: the accounts a signed-in customer may pick, what wallets read.
            ServiceRegistration(
                "openbank.account.v1.CustomerAccountService",
                CustomerAccountServicer(CustomerAccounts(uow), activity),
                customer_account_pb2_grpc.add_CustomerAccountServiceServicer_to_server,
            ),
            *credit.registrations,
        ],
        lifecycle=lifecycle,
    )


def account_spec(consent_lookup: ConsentLookupFactory | None = None) -> ServiceSpec[AccountComponents]:
    """The service's spec; tests pass an in-memory consent lookup."""
    return ServiceSpec(
        name="account",
        versions_dir=VERSIONS_DIR,
        settings_class=AccountSettings,
        audit=audit_tables,
        wire=partial(wire, consent_lookup=consent_lookup),
    )


SPEC = account_spec()
