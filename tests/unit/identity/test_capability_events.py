"""Dynamic isolation's events at identity's intake: payment's CUSTOMER_CAPABILITY_CHANGED as
handed over (services/payment/adapters/isolation_events.py) is checked, kept and shown to the
partner with its capability, status, reason and lowered limit, on the consent it names."""

from __future__ import annotations

import datetime as dt

from services.identity.domain.events import EventType, PartnerEvent
from services.identity.event_servicer import event_message, intake_event
from services.payment.adapters.isolation_events import intake_event as payment_intake_event
from services.payment.isolation_repository import IsolationEvent

NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)


def _through_identity(event: IsolationEvent) -> tuple[str, object]:
    new = intake_event(payment_intake_event(event, "acme", "c1"), 0)
    assert (new.partner_id, new.type, new.resource, new.consent_id) == (
        "acme",
        EventType.CUSTOMER_CAPABILITY_CHANGED,
        "consents/c1",
        "c1",
    )
    shown = event_message(
        PartnerEvent("acme", 7, "e7", new.type, new.resource, new.consent_id, new.event_time, new.data)
    )
    return new.source_key or "", shown


def test_a_lowered_daily_limit_reaches_the_partner_with_the_limit() -> None:
    key, shown = _through_identity(IsolationEvent(12, "cust1", "DAILY_LIMIT", "LOWERED", 50_000, "EUR", "low use", NOW))
    assert key == "isolation:12:c1"  # once per change and consent, whoever relays it again
    change = shown.customer_capability  # type: ignore[attr-defined]
    assert (change.capability, change.status, change.reason) == (
        "DAILY_LIMIT",
        "CUSTOMER_CAPABILITY_STATUS_LOWERED",
        "low use",
    )
    assert (change.limit.currency_code, change.limit.minor_units) == ("EUR", 50_000)
    assert shown.consent == "consents/c1" and shown.event_time.ToDatetime(tzinfo=dt.UTC) == NOW  # type: ignore[attr-defined]


def test_a_pause_and_a_restore_carry_no_limit() -> None:
    for status in ("PAUSED", "ACTIVE"):
        _, shown = _through_identity(IsolationEvent(3, "cust1", "NEW_CREDITOR", status, None, "", "why", NOW))
        change = shown.customer_capability  # type: ignore[attr-defined]
        assert change.status == f"CUSTOMER_CAPABILITY_STATUS_{status}" and not change.HasField("limit")
