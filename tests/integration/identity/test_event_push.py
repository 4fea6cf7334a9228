"""Push delivery over real gRPC (SQLite and PostgreSQL): a real partner receiver that fails its
first attempts gets every event once it recovers, in order, each signed by the bank and
verified against the bank's JWKS; the delivery status is recorded; a receiver that keeps
failing stops delivery after its limit, and the events are still there to poll."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import jwt
import pytest

from openbank.events.v1 import events_pb2, events_pb2_grpc
from openbank.identity.v1 import token_pb2
from tests.integration.identity.harness import (
    Identity,
    Partner,
    bearer,
    failure,
    pkce_pair,
    request_id,
    start_identity,
    stop_identity,
)

SCOPES = ("consents:read", "consents:write", "accounts:read", "events:read")


class Receiver(events_pb2_grpc.EventReceiverServiceServicer):
    """The partner's side: fails while ``failing`` > 0 (counting down), stores what it gets."""

    def __init__(self, failing: int) -> None:
        self.failing = failing
        self.attempts = 0
        self.received: dict[str, str] = {}  # event id -> signed event, in arrival order
        self.arrived = asyncio.Event()

    async def ReceiveEvent(
        self, request: events_pb2.ReceiveEventRequest, context: grpc.aio.ServicerContext
    ) -> events_pb2.ReceiveEventResponse:
        self.attempts += 1
        if self.failing:
            self.failing -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the partner's store is down")
        self.received.setdefault(request.request_id, request.signed_event)
        self.arrived.set()
        return events_pb2.ReceiveEventResponse()


@pytest.fixture
async def pushing(database_url: str) -> AsyncIterator[Identity]:
    running = await start_identity(
        database_url,
        event_push_seconds=0.05,
        event_push_backoff_seconds=0.05,
        event_push_max_backoff_seconds=0.2,
        event_push_allow_insecure=True,
    )
    try:
        yield running
    finally:
        await stop_identity(running)


async def _receiver(failing: int) -> tuple[Receiver, grpc.aio.Server, int]:
    receiver = Receiver(failing)
    server = grpc.aio.server()
    events_pb2_grpc.add_EventReceiverServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return receiver, server, port


async def _authorised(identity: Identity, partner: Partner) -> None:
    _, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge)
    await identity.authorise(consent.name, await identity.create_customer())


async def _until(condition: Any, timeout: float = 20.0) -> None:
    async def wait() -> None:
        while not condition():  # noqa: ASYNC110 (polls a test double's state)
            await asyncio.sleep(0.02)

    await asyncio.wait_for(wait(), timeout)


async def test_a_failing_receiver_gets_every_event_signed_and_in_order(pushing: Identity) -> None:
    identity = pushing
    partner = await identity.register_partner(SCOPES)
    token = bearer(await identity.client_token(partner, ("events:read",)))
    stub = events_pb2_grpc.EventServiceStub(identity.channel)
    receiver, server, port = await _receiver(failing=2)
    try:
        endpoint = events_pb2.EventEndpoint(target=f"127.0.0.1:{port}", insecure=True, max_attempts=5)
        registered = await stub.SetEventEndpoint(
            events_pb2.SetEventEndpointRequest(request_id=request_id(), endpoint=endpoint, after_cursor="0"),
            metadata=token,
        )
        assert registered.endpoint.state == events_pb2.EVENT_ENDPOINT_STATE_ACTIVE
        await _authorised(identity, partner)
        await _authorised(identity, partner)
        await _until(lambda: len(receiver.received) == 2)
        assert receiver.attempts >= 4  # two refused, then the two events

        jwks = await identity.tokens.GetJwks(token_pb2.GetJwksRequest())
        keys = {k["kid"]: jwt.PyJWK(k) for k in json.loads(jwks.jwks_json)["keys"]}
        polled = await stub.PollEvents(events_pb2.PollEventsRequest(request_id=request_id()), metadata=token)
        assert list(receiver.received) == [e.event_id for e in polled.events]
        for event, signed in zip(polled.events, receiver.received.values(), strict=True):
            header = jwt.get_unverified_header(signed)
            assert header["typ"] == "secevent+jwt"
            claims = jwt.decode(
                signed, keys[header["kid"]], algorithms=["ES256"], audience=f"partners/{partner.partner_id}"
            )
            assert claims["jti"] == event.event_id and claims["txn"] == event.cursor
            assert list(claims["events"]) == ["CONSENT_AUTHORISED"]
            assert claims["events"]["CONSENT_AUTHORISED"]["consent"] == event.consent
        # A tampered event does not verify.
        forged = next(iter(receiver.received.values()))[:-4] + "AAAA"
        with pytest.raises(jwt.InvalidSignatureError):
            jwt.decode(
                forged,
                keys[jwt.get_unverified_header(forged)["kid"]],
                algorithms=["ES256"],
                audience=f"partners/{partner.partner_id}",
            )

        status = (await stub.GetEventEndpoint(events_pb2.GetEventEndpointRequest(), metadata=token)).endpoint
        assert (status.delivered_cursor, status.failed_attempts, status.state) == (
            polled.events[-1].cursor,
            0,
            events_pb2.EVENT_ENDPOINT_STATE_ACTIVE,
        )
    finally:
        await server.stop(0)


async def test_delivery_stops_after_its_limit_and_the_events_stay_pollable(pushing: Identity) -> None:
    identity = pushing
    partner = await identity.register_partner(SCOPES)
    token = bearer(await identity.client_token(partner, ("events:read",)))
    stub = events_pb2_grpc.EventServiceStub(identity.channel)
    receiver, server, port = await _receiver(failing=1_000)
    try:
        endpoint = events_pb2.EventEndpoint(target=f"127.0.0.1:{port}", insecure=True, max_attempts=3)
        await stub.SetEventEndpoint(
            events_pb2.SetEventEndpointRequest(request_id=request_id(), endpoint=endpoint), metadata=token
        )
        await _authorised(identity, partner)

        async def state() -> events_pb2.EventEndpoint:
            return (await stub.GetEventEndpoint(events_pb2.GetEventEndpointRequest(), metadata=token)).endpoint

        for _ in range(400):
            status = await state()
            if status.state == events_pb2.EVENT_ENDPOINT_STATE_STOPPED:
                break
            await asyncio.sleep(0.05)
        assert status.state == events_pb2.EVENT_ENDPOINT_STATE_STOPPED
        assert (status.failed_attempts, status.last_error, status.delivered_cursor) == (3, "UNAVAILABLE", "")
        attempts = receiver.attempts
        await asyncio.sleep(0.3)
        assert receiver.attempts == attempts == 3  # stopped: no more attempts
        polled = await stub.PollEvents(events_pb2.PollEventsRequest(request_id=request_id()), metadata=token)
        assert [e.type for e in polled.events] == [events_pb2.EVENT_TYPE_CONSENT_AUTHORISED]
        # Bad registrations are refused, naming the field.
        for bad in (
            events_pb2.EventEndpoint(target="not a target", insecure=True),
            events_pb2.EventEndpoint(target="127.0.0.1:1", insecure=True, max_attempts=21),
        ):
            request = events_pb2.SetEventEndpointRequest(request_id=request_id(), endpoint=bad)
            assert (await failure(stub.SetEventEndpoint(request, metadata=token)))[1] == "FIELD_INVALID"
    finally:
        await server.stop(0)
