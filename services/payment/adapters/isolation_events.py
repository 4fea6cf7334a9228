"""Dynamic isolation's changes into identity's partner event log (EventIntakeService), one
event per consent the customer paid through, each once by its source key."""

from __future__ import annotations

import uuid

from meshlib.clients import PeerCaller
from openbank.common.v1 import money_pb2
from openbank.events.v1 import events_pb2, events_pb2_grpc
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


class IdentityIsolationSink:
    """identity's EventIntakeService over gRPC."""

    def __init__(self, channel: object, call: PeerCaller) -> None:
        self._stub = events_pb2_grpc.EventIntakeServiceStub(channel)
        self._call = call

    async def append(self, events: list[tuple[IsolationEvent, str, str]]) -> None:
        """Append each (event, partner, consent) once."""
        if not events:
            return
        request = events_pb2.AppendEventsRequest(
            request_id=uuid.uuid4().hex, events=[intake_event(e, partner, consent) for e, partner, consent in events]
        )
        await self._call(self._stub.AppendEvents, request, "events.AppendEvents")
