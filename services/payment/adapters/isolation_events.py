"""Dynamic isolation's changes as identity's partner events (EventIntakeService, through
meshlib.event_intake's sink): one event per consent the customer paid through, each once by
its source key."""

from __future__ import annotations

from openbank.common.v1 import money_pb2
from openbank.events.v1 import events_pb2
from services.payment.isolation_repository import IsolationEvent


def intake_event(event: IsolationEvent, partner_id: str, consent_id: str) -> events_pb2.IntakeEvent:
    """The change as the partner's event on ``consent_id``."""
    change = events_pb2.CustomerCapabilityChange(
        capability=event.capability, status=f"CUSTOMER_CAPABILITY_STATUS_{event.status}", reason=event.reason
    )
    if event.limit_minor is not None:
        change.limit.CopyFrom(money_pb2.Money(currency_code=event.currency, minor_units=event.limit_minor))
    message = events_pb2.Event(
        type=events_pb2.EVENT_TYPE_CUSTOMER_CAPABILITY_CHANGED,
        resource=f"consents/{consent_id}",
        consent=f"consents/{consent_id}",
        customer_capability=change,
    )
    message.event_time.FromDatetime(event.event_time)
    return events_pb2.IntakeEvent(
        source_key=f"isolation:{event.seq}:{consent_id}", partner=f"partners/{partner_id}", event=message
    )


def to_intake_event(entry: tuple[IsolationEvent, str, str]) -> events_pb2.IntakeEvent:
    """An (event, partner, consent) entry of the sweep's relay as the partner's event."""
    return intake_event(*entry)
