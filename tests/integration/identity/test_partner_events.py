"""The partner event log over real gRPC on SQLite and PostgreSQL: every consent event made by
its real change, a stream that sees each event once and in order (also resumed from a cursor),
aggregated polling with acknowledgement, the relays' intake appending each event once,
retention with its CURSOR_EXPIRED, and idle streams costing no database query."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import sqlalchemy as sa

from meshlib.grpc_errors import decode_status, error_info
from openbank.events.v1 import events_pb2, events_pb2_grpc
from openbank.identity.v1 import consent_pb2
from openbank.payment.v1 import payment_pb2
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

ET = events_pb2
PARTNER_SCOPES = ("consents:read", "consents:write", "accounts:read", "events:read")


@pytest.fixture
async def events_identity(database_url: str) -> AsyncIterator[Identity]:
    """Identity with a fast fan-out sweep."""
    running = await start_identity(database_url, event_sweep_seconds=0.2)
    try:
        yield running
    finally:
        await stop_identity(running)


async def _events_token(identity: Identity, partner: Partner) -> tuple[tuple[str, str], ...]:
    return bearer(await identity.client_token(partner, ("events:read",)))


async def _poll(identity: Identity, partner: Partner, **fields: Any) -> events_pb2.PollEventsResponse:
    stub = events_pb2_grpc.EventServiceStub(identity.channel)
    return await stub.PollEvents(
        events_pb2.PollEventsRequest(request_id=request_id(), **fields), metadata=await _events_token(identity, partner)
    )


async def _take(stream: Any, count: int) -> list[events_pb2.Event]:
    taken = []
    async for message in stream:
        taken.append(message.event)
        if len(taken) == count:
            break
    return taken


async def _authorised(identity: Identity, partner: Partner, **kw: Any) -> tuple[consent_pb2.Consent, Any]:
    _, challenge = pkce_pair()
    consent = await identity.create_consent(partner, challenge, **kw)
    customer = await identity.create_customer()
    await identity.authorise(consent.name, customer)
    return consent, customer


async def test_each_consent_change_reaches_the_partner_once_in_order(events_identity: Identity) -> None:
    identity = events_identity
    partner = await identity.register_partner(PARTNER_SCOPES)
    stranger = await identity.register_partner(PARTNER_SCOPES)
    stub = events_pb2_grpc.EventServiceStub(identity.channel)
    live = stub.StreamEvents(events_pb2.StreamEventsRequest(), metadata=await _events_token(identity, partner))
    await live.wait_for_connection()

    consent, customer = await _authorised(identity, partner, expires_in=dt.timedelta(days=3))
    bank_app = await identity.bank_app()
    on_consent = {"request_id": "", "name": consent.name, "customer": customer.name}
    await identity.consents.PauseConsent(
        consent_pb2.PauseConsentRequest(**on_consent | {"request_id": request_id()}), metadata=bank_app
    )
    await identity.consents.ResumeConsent(
        consent_pb2.ResumeConsentRequest(**on_consent | {"request_id": request_id()}), metadata=bank_app
    )
    await identity.consents.UpdateConsentLimits(
        consent_pb2.UpdateConsentLimitsRequest(**on_consent | {"request_id": request_id()}, reads_per_day=5),
        metadata=bank_app,
    )
    # The consent expires within the 7-day notice: the housekeeping tells it once.
    log = identity.server.components.event_log
    assert await log.notify_expiries_once() == 1 and await log.notify_expiries_once() == 0
    await identity.consents.CustomerRevokeConsent(
        consent_pb2.CustomerRevokeConsentRequest(**on_consent | {"request_id": request_id()}), metadata=bank_app
    )
    _, challenge = pkce_pair()
    refused = await identity.create_consent(partner, challenge, expires_in=dt.timedelta(hours=1))
    await identity.consents.RejectConsent(
        consent_pb2.RejectConsentRequest(request_id=request_id(), name=refused.name, customer=customer.name),
        metadata=bank_app,
    )
    expiring, _ = await _authorised(identity, partner, expires_in=dt.timedelta(hours=2))
    identity.clock.advance(hours=3)
    assert await log.notify_expiries_once() == 1  # past its expiry: EXPIRED only, never "soon" too
    identity.clock.advance(hours=-3)  # back, so new tokens are valid for the verifier's own clock

    expected = [
        (ET.EVENT_TYPE_CONSENT_AUTHORISED, consent.name),
        (ET.EVENT_TYPE_CONSENT_PAUSED, consent.name),
        (ET.EVENT_TYPE_CONSENT_RESUMED, consent.name),
        (ET.EVENT_TYPE_CONSENT_LIMITS_CHANGED, consent.name),
        (ET.EVENT_TYPE_CONSENT_EXPIRING_SOON, consent.name),
        (ET.EVENT_TYPE_CONSENT_REVOKED, consent.name),
        (ET.EVENT_TYPE_CONSENT_REJECTED, refused.name),
        (ET.EVENT_TYPE_CONSENT_AUTHORISED, expiring.name),
    ]
    streamed = await asyncio.wait_for(_take(live, len(expected) + 1), 20)
    live.cancel()
    got = [(e.type, e.consent) for e in streamed]
    assert got[: len(expected)] == expected
    assert got[-1] == (ET.EVENT_TYPE_CONSENT_EXPIRED, expiring.name)  # not told "soon" after expiry
    assert [e.cursor for e in streamed] == [str(n) for n in range(1, len(streamed) + 1)]
    assert all(e.resource == e.consent for e in streamed) and len({e.event_id for e in streamed}) == len(streamed)
    assert streamed[4].consent_expiry.expire_time.ToDatetime(dt.UTC) > identity.clock()

    # Polling sees the same log; the stranger sees none of it.
    polled = await _poll(identity, partner, max_events=1000)
    assert [e.event_id for e in polled.events] == [e.event_id for e in streamed]
    assert not (await _poll(identity, stranger)).events

    # A stream resumed from a cursor gets exactly what follows it, filtered by type and consent.
    resumed = stub.StreamEvents(
        events_pb2.StreamEventsRequest(after_cursor=streamed[2].cursor), metadata=await _events_token(identity, partner)
    )
    assert [e.event_id for e in await asyncio.wait_for(_take(resumed, len(streamed) - 3), 20)] == [
        e.event_id for e in streamed[3:]
    ]
    resumed.cancel()
    only = stub.StreamEvents(
        events_pb2.StreamEventsRequest(types=[ET.EVENT_TYPE_CONSENT_AUTHORISED], consents=[expiring.name]),
        metadata=await _events_token(identity, partner),
    )
    await only.wait_for_connection()
    filtered = await _poll(identity, partner, types=[ET.EVENT_TYPE_CONSENT_REVOKED], consents=[consent.name])
    assert [e.type for e in filtered.events] == [ET.EVENT_TYPE_CONSENT_REVOKED]
    only.cancel()


async def test_polling_acknowledges_and_replays_a_page(events_identity: Identity) -> None:
    identity = events_identity
    partner = await identity.register_partner(PARTNER_SCOPES)
    for _ in range(3):
        await _authorised(identity, partner)
    first = await _poll(identity, partner, max_events=2)
    assert [e.cursor for e in first.events] == ["1", "2"] and first.more_available and not first.acknowledged_cursor
    stub = events_pb2_grpc.EventServiceStub(identity.channel)
    token = await _events_token(identity, partner)
    ack = events_pb2.PollEventsRequest(request_id=request_id(), ack_cursor="2", max_events=2)
    second = await stub.PollEvents(ack, metadata=token)
    assert [e.cursor for e in second.events] == ["3"] and not second.more_available
    assert second.acknowledged_cursor == "2"
    await _authorised(identity, partner)
    assert await stub.PollEvents(ack, metadata=token) == second  # a retry answers the same page
    assert [e.cursor for e in (await _poll(identity, partner)).events] == ["3", "4"]
    for bad in (
        {"ack_cursor": "99"},
        {"after_cursor": "x1"},
        {"max_events": 1001},
        {"types": [0]},
        {"consents": ["c/1"]},
    ):
        assert (await failure(_poll(identity, partner, **bad)))[1] == "FIELD_INVALID", bad


async def test_relayed_events_are_appended_once(events_identity: Identity) -> None:
    identity = events_identity
    partner = await identity.register_partner(PARTNER_SCOPES)
    relay = bearer(await identity.service_token("payment"))
    intake = events_pb2_grpc.EventIntakeServiceStub(identity.channel)

    def payment_event(seq: int, state: int) -> events_pb2.IntakeEvent:
        event = events_pb2.Event(
            type=ET.EVENT_TYPE_PAYMENT_STATE_CHANGED,
            resource="payments/p1",
            consent="consents/c1",
            payment=events_pb2.PaymentStateChange(state=payment_pb2.PaymentState.Name(state)),
        )
        event.event_time.GetCurrentTime()
        return events_pb2.IntakeEvent(
            source_key=f"payment:{seq}", partner=f"partners/{partner.partner_id}", event=event
        )

    batch = [payment_event(1, payment_pb2.PAYMENT_STATE_RECEIVED), payment_event(2, payment_pb2.PAYMENT_STATE_SETTLED)]
    first = await intake.AppendEvents(
        events_pb2.AppendEventsRequest(request_id=request_id(), events=batch), metadata=relay
    )
    again = await intake.AppendEvents(
        events_pb2.AppendEventsRequest(
            request_id=request_id(), events=[*batch, payment_event(3, payment_pb2.PAYMENT_STATE_SETTLED)]
        ),
        metadata=relay,
    )
    assert (first.appended, again.appended) == (2, 1)
    events = (await _poll(identity, partner)).events
    assert [(e.cursor, e.payment.state) for e in events] == [
        ("1", "PAYMENT_STATE_RECEIVED"),
        ("2", "PAYMENT_STATE_SETTLED"),
        ("3", "PAYMENT_STATE_SETTLED"),
    ]
    assert events[0].payment.previous_state == "" and events[0].consent == "consents/c1"
    # A partner may not append, and the intake is not the partner's to call.
    code, reason = await failure(
        intake.AppendEvents(
            events_pb2.AppendEventsRequest(request_id=request_id(), events=batch),
            metadata=await _events_token(identity, partner),
        )
    )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")


async def test_a_cursor_older_than_retention_must_resynchronise(events_identity: Identity) -> None:
    identity = events_identity
    partner = await identity.register_partner(PARTNER_SCOPES)
    await _authorised(identity, partner)
    await _authorised(identity, partner)
    identity.clock.advance(days=31)
    assert await identity.server.components.event_log.purge_once() == 2
    identity.clock.advance(days=-31)  # back, so new tokens are valid for the verifier's own clock
    await _authorised(identity, partner)
    stub = events_pb2_grpc.EventServiceStub(identity.channel)
    token = await _events_token(identity, partner)
    for call in (
        lambda: stub.PollEvents(
            events_pb2.PollEventsRequest(request_id=request_id(), after_cursor="1"), metadata=token
        ),
        lambda: _take(stub.StreamEvents(events_pb2.StreamEventsRequest(after_cursor="1"), metadata=token), 1),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call()
        assert refused.value.code() == grpc.StatusCode.OUT_OF_RANGE
        info = error_info(decode_status(refused.value.trailing_metadata()))
        assert info is not None and info.reason == "CURSOR_EXPIRED" and info.metadata["oldest_cursor"] == "2"
    # From the oldest cursor on, nothing is missing.
    assert [e.cursor for e in (await _poll(identity, partner, after_cursor="2")).events] == ["3"]


async def test_idle_streams_cost_no_query_per_stream(sqlite_url: str) -> None:
    """200 open streams of one partner, idle: the database sees the fan-out's one sweep query
    per interval, not a poll per stream; then one event reaches every stream."""
    identity = await start_identity(sqlite_url, event_sweep_seconds=0.5)
    try:
        partner = await identity.register_partner(PARTNER_SCOPES)
        token = await _events_token(identity, partner)
        stub = events_pb2_grpc.EventServiceStub(identity.channel)
        streams = [stub.StreamEvents(events_pb2.StreamEventsRequest(), metadata=token) for _ in range(200)]
        await asyncio.gather(*(s.wait_for_connection() for s in streams))
        signal = identity.server.components.event_signal
        while len(getattr(signal, "_interests", {}).get(partner.partner_id, ())) < 200:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        queries = 0

        def count(*_: Any) -> None:
            nonlocal queries
            queries += 1

        engine = identity.server.runtime.database.engine.sync_engine
        sa.event.listen(engine, "before_cursor_execute", count)
        sweeps_before = await _sweeps(signal, 3)
        sa.event.remove(engine, "before_cursor_execute", count)
        # Three sweeps: a query each, plus whatever identity's background jobs ran meanwhile (more
        # of them when the machine is busy and the sweeps late); polling per stream would have
        # made 200 queries per interval, 600 in three.
        assert sweeps_before and queries < len(streams), queries
        await _authorised(identity, partner)
        arrived = await asyncio.wait_for(asyncio.gather(*(_take(s, 1) for s in streams)), 30)
        assert {events[0].type for events in arrived} == {ET.EVENT_TYPE_CONSENT_AUTHORISED}
        for stream in streams:
            stream.cancel()
    finally:
        await stop_identity(identity)


async def _sweeps(signal: Any, count: int) -> bool:
    """Wait until the fan-out has run ``count`` sweeps (by wrapping its sweep)."""
    done = 0
    original = signal._sweep
    finished = asyncio.Event()

    async def counted(keys: list[str]) -> dict[str, int]:
        nonlocal done
        heads = await original(keys)
        done += 1
        if done >= count:
            finished.set()
        return heads

    signal._sweep = counted
    try:
        await asyncio.wait_for(finished.wait(), 30)
    finally:
        signal._sweep = original
    return True
