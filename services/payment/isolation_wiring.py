"""Wiring of dynamic isolation (services/payment/isolation.py), kept out of bootstrap.py: the
reloadable policy, the customer's use cases, the leased sweep and its relay to identity."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import cast

from meshlib.app import Runtime
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.clients import PeerCaller
from meshlib.storage import Transactions
from services.payment.adapters.isolation_events import IdentityIsolationSink
from services.payment.adapters.risk_rules_file import ReloadableRiskRules
from services.payment.domain.isolation import IsolationPolicy, load_isolation_policy
from services.payment.isolation import CustomerIsolation, IsolationSweep
from services.payment.settings import PaymentSettings
from services.payment.unit_of_work import PaymentUnitOfWork

EVENTS_WRITE_SCOPE = "events:write"


def isolation_wiring(
    runtime: Runtime, uow: Callable[..., PaymentUnitOfWork]
) -> tuple[ReloadableRiskRules, CustomerIsolation, IsolationSweep]:
    """Dynamic isolation: the reloadable policy, the customer's use cases, the leased sweep (its
    changes relayed to identity with a token of its own, ``events:write``, as the outbox relay)."""
    settings: PaymentSettings = runtime.settings
    policy = ReloadableRiskRules(
        settings.isolation_policy_file, settings.risk_rules_check_seconds, load_isolation_policy, on_sighup=False
    )
    sink = None
    if settings.event_relay and settings.service_client_id and settings.service_client_secret:
        channel = runtime.channel(settings.identity_target)
        tokens = ServiceTokenSource(
            channel, settings.service_client_id, settings.service_client_secret, [EVENTS_WRITE_SCOPE]
        )
        call = PeerCaller(tokens.token, deadline_seconds=settings.downstream_deadline_seconds, attempts=1)
        sink = IdentityIsolationSink(channel, call)
    transactions = Transactions(uow)
    sweep = IsolationSweep(
        transactions,
        cast(Callable[[], IsolationPolicy], policy),
        sink,
        interval_seconds=settings.isolation_interval_seconds,
        sweep_every_seconds=settings.isolation_sweep_seconds,
        lease=dt.timedelta(seconds=settings.isolation_lease_seconds),
    )
    return policy, CustomerIsolation(transactions), sweep
