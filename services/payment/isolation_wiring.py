"""Wiring of dynamic isolation (services/payment/isolation.py), kept out of bootstrap.py: the
reloadable policy, the customer's use cases, the leased sweep and its relay to identity."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import cast

from meshlib.app import Runtime
from meshlib.event_intake import IdentityIntake
from meshlib.storage import Transactions
from services.payment.adapters.isolation_events import to_intake_event
from services.payment.adapters.risk_rules_file import ReloadableRiskRules
from services.payment.domain.isolation import IsolationPolicy, load_isolation_policy
from services.payment.isolation import CustomerIsolation, IsolationSweep
from services.payment.settings import PaymentSettings
from services.payment.unit_of_work import PaymentUnitOfWork


def isolation_wiring(
    runtime: Runtime, uow: Callable[..., PaymentUnitOfWork], events: IdentityIntake | None
) -> tuple[ReloadableRiskRules, CustomerIsolation, IsolationSweep]:
    """Dynamic isolation: the reloadable policy, the customer's use cases, the leased sweep (its
    changes relayed to identity through ``events``, the peer the outbox relay uses too; None:
    not relayed)."""
    settings: PaymentSettings = runtime.settings
    policy = ReloadableRiskRules(
        settings.isolation_policy_file, settings.risk_rules_check_seconds, load_isolation_policy, on_sighup=False
    )
    sink = events.sink(to_intake_event) if events is not None else None
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
