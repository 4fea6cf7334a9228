"""EventService (partners) and EventIntakeService (the mesh's own outbox relays) over gRPC,
with their converters: protobuf in and out, the use cases in event_service.py."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import timestamp_pb2

from meshlib.auth.context import require_caller
from meshlib.errors import InvalidArgument
from meshlib.idempotency import fingerprint
from meshlib.names import parse_name
from meshlib.storage import Codec, IdempotencyKey
from openbank.common.v1 import money_pb2
from openbank.events.v1 import events_pb2, events_pb2_grpc
from services.identity.domain.events import (
    MOVEMENT_TYPES,
    EventFilter,
    EventType,
    NewEvent,
    PartnerEvent,
    event_filter,
    format_cursor,
)
from services.identity.event_push import EventEndpoints, endpoint_message
from services.identity.event_service import EventPage, PartnerEventLog

_PREFIX = "EVENT_TYPE_"


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def event_message(event: PartnerEvent) -> events_pb2.Event:
    """The partner-facing event."""
    message = events_pb2.Event(
        event_id=event.event_id,
        cursor=format_cursor(event.seq),
        type=events_pb2.EventType.Value(_PREFIX + event.type.value),
        resource=event.resource,
        consent=f"consents/{event.consent_id}" if event.consent_id else "",
        event_time=_timestamp(event.event_time),
    )
    data = event.data
    if event.type is EventType.PAYMENT_STATE_CHANGED:
        previous = data.get("previous_state", "")
        message.payment.CopyFrom(
            events_pb2.PaymentStateChange(
                previous_state=f"PAYMENT_STATE_{previous}" if previous else "",
                state=f"PAYMENT_STATE_{data.get('state', '')}",
                status_reason=data.get("status_reason", ""),
            )
        )
    elif event.type in (EventType.ACCOUNT_DEBITED, EventType.ACCOUNT_CREDITED):
        message.account.CopyFrom(
            events_pb2.AccountMovement(
                amount=money_pb2.Money(currency_code=data.get("currency", ""), minor_units=data.get("minor_units", 0)),
                masked_account_number=data.get("masked_account_number", ""),
                reference=data.get("reference", ""),
            )
        )
    elif event.type in (EventType.CONSENT_EXPIRING_SOON, EventType.CONSENT_EXPIRED) and "expire_time" in data:
        message.consent_expiry.CopyFrom(
            events_pb2.ConsentExpiry(expire_time=_timestamp(dt.datetime.fromisoformat(data["expire_time"])))
        )
    elif event.type is EventType.CUSTOMER_CAPABILITY_CHANGED:
        change = events_pb2.CustomerCapabilityChange(
            capability=data.get("capability", ""), status=data.get("status", ""), reason=data.get("reason", "")
        )
        if data.get("limit_currency"):
            change.limit.CopyFrom(
                money_pb2.Money(currency_code=data["limit_currency"], minor_units=int(data.get("limit_minor_units", 0)))
            )
        message.customer_capability.CopyFrom(change)
    elif event.type in (EventType.CREDIT_OFFER_STATE_CHANGED, EventType.CREDIT_LINE_STATE_CHANGED):
        message.credit.CopyFrom(
            events_pb2.CreditStateChange(
                state=data.get("state", ""),
                reason=data.get("reason", ""),
                account=data.get("account", ""),
                related=data.get("related", ""),
            )
        )
    elif event.type is EventType.APPLICATION_STATE_CHANGED:
        message.application.CopyFrom(
            events_pb2.ApplicationStateChange(
                state=f"APPLICATION_STATE_{data.get('state', '')}",
                reason=f"APPLICATION_REASON_{data.get('reason', '')}",
            )
        )
    return message


def _type_names(values: Any) -> list[str]:
    names = []
    for value in values:
        name = events_pb2.EventType.Name(value) if value in events_pb2.EventType.values() else ""
        names.append(name[len(_PREFIX) :] if name.startswith(_PREFIX) and value else "?")
    return names


def request_filter(request: Any) -> EventFilter:
    """The types and consents a request asks for, each checked."""
    return event_filter(_type_names(request.types), list(request.consents))


# The contract's event types by number (a relayed batch names one per event).
_EVENT_TYPES = {
    number: EventType[name.removeprefix(_PREFIX)]
    for name, number in events_pb2.EventType.items()
    if number and name.removeprefix(_PREFIX) in EventType.__members__
}


def intake_event(message: events_pb2.IntakeEvent, index: int) -> NewEvent:
    """A relayed outbox event, checked."""
    field = f"events[{index}]"
    event = message.event
    kind = _EVENT_TYPES.get(event.type)
    if kind is None:
        raise InvalidArgument.field(f"{field}.event.type", "unknown event type")
    partner_id = customer_id = ""
    if message.customer:
        # An account movement for the consents covering the account, not one partner's.
        customer_id = parse_name(message.customer, "customers", f"{field}.customer")
        if message.partner:
            raise InvalidArgument.field(f"{field}.partner", "must be empty when customer is set")
        if kind not in MOVEMENT_TYPES or not event.HasField("account"):
            raise InvalidArgument.field(f"{field}.customer", "only for account movements")
        parse_name(event.resource, "accounts", f"{field}.event.resource")
    else:
        partner_id = parse_name(message.partner, "partners", f"{field}.partner")
    consent_id = parse_name(event.consent, "consents", f"{field}.event.consent") if event.consent else ""
    data: dict[str, Any] = {}
    if event.HasField("payment"):
        change = event.payment
        if not change.state.startswith("PAYMENT_STATE_"):
            raise InvalidArgument.field(f"{field}.event.payment.state", "must name a payment state")
        data = {
            "previous_state": change.previous_state.removeprefix("PAYMENT_STATE_"),
            "state": change.state.removeprefix("PAYMENT_STATE_"),
            "status_reason": change.status_reason,
        }
    elif event.HasField("account"):
        moved = event.account
        data = {
            "currency": moved.amount.currency_code,
            "minor_units": moved.amount.minor_units,
            "masked_account_number": moved.masked_account_number,
            "reference": moved.reference,
        }
    elif event.HasField("customer_capability"):
        capability = event.customer_capability
        data = {"capability": capability.capability, "status": capability.status, "reason": capability.reason}
        if capability.HasField("limit"):
            limit = capability.limit
            data |= {"limit_currency": limit.currency_code, "limit_minor_units": limit.minor_units}
    elif event.HasField("credit"):  # the account service's credit offers and lines
        credit = event.credit
        if not credit.state.startswith(("CREDIT_OFFER_STATE_", "CREDIT_LINE_STATE_")):
            raise InvalidArgument.field(f"{field}.event.credit.state", "must name a credit offer or line state")
        data = {"state": credit.state, "reason": credit.reason, "account": credit.account, "related": credit.related}
    if not message.source_key or not event.resource:
        raise InvalidArgument.field(f"{field}.source_key", "source_key and event.resource are required")
    return NewEvent(
        partner_id=partner_id,
        type=kind,
        resource=event.resource,
        consent_id=consent_id,
        event_time=event.event_time.ToDatetime(tzinfo=dt.UTC),
        data=data,
        source_key=message.source_key,
        customer_id=customer_id,
    )


def _page_message(page: EventPage) -> events_pb2.PollEventsResponse:
    return events_pb2.PollEventsResponse(
        events=[event_message(e) for e in page.events],
        more_available=page.more_available,
        acknowledged_cursor=format_cursor(page.acknowledged_seq) if page.acknowledged_seq else "",
    )


class EventServicer(events_pb2_grpc.EventServiceServicer):
    """The partner's own events: a resumable stream, aggregated polling, push endpoints."""

    def __init__(self, log: PartnerEventLog, endpoints: EventEndpoints) -> None:
        self._log = log
        self._endpoints = endpoints

    async def SetEventEndpoint(
        self, request: events_pb2.SetEventEndpointRequest, context: grpc.aio.ServicerContext
    ) -> events_pb2.SetEventEndpointResponse:
        """Register the partner's push endpoint."""
        caller = require_caller()
        key = IdempotencyKey(caller.subject, "SetEventEndpoint", request.request_id, fingerprint(request))
        codec: Codec[Any] = Codec(
            lambda endpoint: events_pb2.SetEventEndpointResponse(
                endpoint=endpoint_message(endpoint)
            ).SerializeToString(),
            events_pb2.SetEventEndpointResponse.FromString,
        )
        result = await self._endpoints.set(
            key,
            codec,
            caller.require_partner(),
            request.endpoint.target,
            insecure=request.endpoint.insecure,
            max_attempts=request.endpoint.max_attempts,
            after_cursor=request.after_cursor,
        )
        if isinstance(result, events_pb2.SetEventEndpointResponse):
            return result
        return events_pb2.SetEventEndpointResponse(endpoint=endpoint_message(result))

    async def GetEventEndpoint(
        self, request: events_pb2.GetEventEndpointRequest, context: grpc.aio.ServicerContext
    ) -> events_pb2.GetEventEndpointResponse:
        """The partner's push endpoint and its delivery status."""
        endpoint = await self._endpoints.get(require_caller().require_partner())
        return events_pb2.GetEventEndpointResponse(endpoint=endpoint_message(endpoint))

    async def StreamEvents(
        self, request: events_pb2.StreamEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[events_pb2.StreamEventsResponse]:
        """The partner's events after the cursor, then live."""
        partner_id = require_caller().require_partner()
        chosen = request_filter(request)
        stream = await self._log.open_stream(partner_id, request.after_cursor, chosen)
        await context.send_initial_metadata(())  # the partner learns the stream is open
        async for event in stream.events():
            yield events_pb2.StreamEventsResponse(event=event_message(event))

    async def PollEvents(
        self, request: events_pb2.PollEventsRequest, context: grpc.aio.ServicerContext
    ) -> events_pb2.PollEventsResponse:
        """Acknowledge, then a page of events."""
        caller = require_caller()
        partner_id = caller.require_partner()
        chosen = request_filter(request)
        key = IdempotencyKey(caller.subject, "PollEvents", request.request_id, fingerprint(request))
        codec: Codec[Any] = Codec(
            lambda page: _page_message(page).SerializeToString(), events_pb2.PollEventsResponse.FromString
        )
        result = await self._log.poll(
            key,
            codec,
            partner_id,
            ack_cursor=request.ack_cursor,
            after_cursor=request.after_cursor,
            max_events=request.max_events,
            chosen=chosen,
        )
        return result if isinstance(result, events_pb2.PollEventsResponse) else _page_message(result)


class EventIntakeServicer(events_pb2_grpc.EventIntakeServiceServicer):
    """The mesh's outbox relays hand their events over here."""

    def __init__(self, log: PartnerEventLog) -> None:
        self._log = log

    async def AppendEvents(
        self, request: events_pb2.AppendEventsRequest, context: grpc.aio.ServicerContext
    ) -> events_pb2.AppendEventsResponse:
        """Append each event once, in order."""
        require_caller()
        events = [intake_event(message, i) for i, message in enumerate(request.events)]
        return events_pb2.AppendEventsResponse(appended=await self._log.append(events))
