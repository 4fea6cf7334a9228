"""Push delivery of the partner event log: a partner registers its EventReceiverService
(SetEventEndpoint) and the bank calls it with each new event, in order, signed as a Security
Event Token (RFC 8417 shape, ``typ: secevent+jwt``) by identity's signing keys, so the partner
verifies it against the bank's JWKS.

Every replica runs :meth:`EventPusher.push_once` periodically: one query finds the endpoints
that are due (behind their partner's head, not backing off, not leased); a replica leases one
before delivering to it, so one replica at a time delivers to an endpoint, in order. A failed
delivery backs off exponentially; after ``max_attempts`` consecutive failures the endpoint is
STOPPED and the events stay available to StreamEvents and PollEvents. The position only moves
after the partner said OK, so an event is delivered at least once; its ``request_id`` is the
event id, which the partner handles once.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import sqlalchemy as sa

from meshlib.errors import InvalidArgument, NotFound
from meshlib.storage import Codec, IdempotencyKey, Transactions, as_utc
from openbank.events.v1 import events_pb2, events_pb2_grpc
from services.identity.common import Clock, Saved, UnitOfWorkFactory
from services.identity.domain.events import EventFilter, PartnerEvent, format_cursor, parse_cursor
from services.identity.tables import event_endpoints, partner_event_heads
from services.identity.unit_of_work import IdentityUnitOfWork

log = logging.getLogger("identity.events.push")

ACTIVE, STOPPED = "ACTIVE", "STOPPED"
DEFAULT_MAX_ATTEMPTS, MAX_MAX_ATTEMPTS = 8, 20
_TARGET = re.compile(r"^[A-Za-z0-9.\-]{1,253}:[0-9]{1,5}$")
_table = event_endpoints

Signer = Callable[[dict[str, Any]], Awaitable[str]]


@dataclass(frozen=True)
class Endpoint:
    """A partner's push endpoint and where its delivery stands."""

    partner_id: str
    target: str
    insecure: bool
    max_attempts: int
    state: str
    delivered_seq: int
    failed_attempts: int
    last_error: str
    next_attempt_at: dt.datetime


@dataclass(frozen=True)
class PushSettings:
    """Backoff, lease, what the bank allows."""

    allow_insecure: bool = False
    base_backoff: dt.timedelta = dt.timedelta(seconds=1)
    max_backoff: dt.timedelta = dt.timedelta(minutes=5)
    lease: dt.timedelta = dt.timedelta(seconds=30)
    deadline_seconds: float = 5.0
    batch: int = 50


def _from_row(row: Any) -> Endpoint:
    return Endpoint(
        row.partner_id,
        row.target,
        bool(row.insecure),
        int(row.max_attempts),
        row.state,
        int(row.delivered_seq),
        int(row.failed_attempts),
        row.last_error,
        as_utc(row.next_attempt_at) or dt.datetime.min.replace(tzinfo=dt.UTC),
    )


def endpoint_message(endpoint: Endpoint) -> events_pb2.EventEndpoint:
    """The contract's view of an endpoint."""
    message = events_pb2.EventEndpoint(
        target=endpoint.target,
        insecure=endpoint.insecure,
        max_attempts=endpoint.max_attempts,
        state=events_pb2.EventEndpointState.Value(f"EVENT_ENDPOINT_STATE_{endpoint.state}"),
        delivered_cursor=format_cursor(endpoint.delivered_seq) if endpoint.delivered_seq else "",
        failed_attempts=endpoint.failed_attempts,
        last_error=endpoint.last_error,
    )
    message.next_attempt_time.FromDatetime(endpoint.next_attempt_at)
    return message


def backoff(failures: int, settings: PushSettings) -> dt.timedelta:
    """How long to wait after ``failures`` consecutive failures: doubling, capped."""
    return min(settings.max_backoff, settings.base_backoff * (2 ** max(0, failures - 1)))


class EventEndpoints:
    """SetEventEndpoint and GetEventEndpoint."""

    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, settings: PushSettings) -> None:
        self._uow = uow
        self._tx = Transactions(uow, clock=clock)
        self._clock = clock
        self._settings = settings

    async def set(
        self,
        key: IdempotencyKey,
        codec: Codec[Endpoint | Saved],
        partner_id: str,
        target: str,
        *,
        insecure: bool,
        max_attempts: int,
        after_cursor: str,
    ) -> Endpoint | Saved:
        """Register (or replace) the endpoint; delivery starts after the cursor."""
        if not _TARGET.match(target):
            raise InvalidArgument.field("endpoint.target", "must be host:port")
        if insecure and not self._settings.allow_insecure:
            raise InvalidArgument.field("endpoint.insecure", "this bank delivers over TLS only")
        if not 0 <= max_attempts <= MAX_MAX_ATTEMPTS:
            raise InvalidArgument.field("endpoint.max_attempts", f"must be between 0 and {MAX_MAX_ATTEMPTS}")
        after = parse_cursor(after_cursor, "after_cursor") if after_cursor else None

        async def operation(uow: IdentityUnitOfWork) -> Endpoint:
            last, _, _ = await uow.partner_events.head(partner_id)
            if after is not None and after > last:
                raise InvalidArgument.field("after_cursor", "not a cursor of this partner's events")
            now = self._clock()
            endpoint = Endpoint(
                partner_id, target, insecure, max_attempts or DEFAULT_MAX_ATTEMPTS, ACTIVE,
                last if after is None else after, 0, "", now,
            )  # fmt: skip
            values = {
                "target": endpoint.target,
                "insecure": endpoint.insecure,
                "max_attempts": endpoint.max_attempts,
                "state": ACTIVE,
                "delivered_seq": endpoint.delivered_seq,
                "failed_attempts": 0,
                "last_error": "",
                "next_attempt_at": now,
                "lease_owner": None,
                "lease_until": None,
                "updated_at": now,
            }
            changed = await uow.connection.execute(
                _table.update().where(_table.c.partner_id == partner_id).values(**values)
            )
            if not changed.rowcount:
                await uow.connection.execute(_table.insert().values(partner_id=partner_id, **values))
            return endpoint

        return await self._tx.run(operation, key=key, codec=codec)

    async def get(self, partner_id: str) -> Endpoint:
        """The partner's endpoint; NOT_FOUND when none is registered."""
        async with self._uow(read_only=True) as uow:
            row = (await uow.connection.execute(sa.select(_table).where(_table.c.partner_id == partner_id))).first()
        if row is None:
            raise NotFound("no event endpoint is registered")
        return _from_row(row)


class EventPusher:
    """Delivers due endpoints' events (see the module)."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        sign: Signer,
        issuer: str,
        settings: PushSettings,
        channel_for: Callable[[str, bool], grpc.aio.Channel] | None = None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._sign = sign
        self._issuer = issuer
        self._settings = settings
        self._owner = uuid.uuid4().hex
        self._channels: dict[tuple[str, bool], grpc.aio.Channel] = {}
        self._channel_for = channel_for or _open_channel

    async def push_once(self) -> int:
        """Deliver what is due to every endpoint this replica can lease; events delivered."""
        delivered = 0
        for partner_id in await self._due():
            endpoint = await self._lease(partner_id)
            if endpoint is not None:
                delivered += await self._deliver(endpoint)
        return delivered

    async def _due(self) -> list[str]:
        now = self._clock()
        heads = partner_event_heads
        query = (
            sa.select(_table.c.partner_id)
            .select_from(_table.join(heads, heads.c.partner_id == _table.c.partner_id))
            .where(
                _table.c.state == ACTIVE,
                _table.c.next_attempt_at <= now,
                _table.c.delivered_seq < heads.c.last_seq,
                sa.or_(_table.c.lease_until.is_(None), _table.c.lease_until < now),
            )
            .limit(100)
        )
        async with self._uow(read_only=True) as uow:
            return [r.partner_id for r in await uow.connection.execute(query)]

    async def _lease(self, partner_id: str) -> Endpoint | None:
        now = self._clock()
        async with self._uow() as uow:
            taken = await uow.connection.execute(
                _table.update()
                .where(
                    _table.c.partner_id == partner_id,
                    _table.c.state == ACTIVE,
                    sa.or_(_table.c.lease_until.is_(None), _table.c.lease_until < now),
                )
                .values(lease_owner=self._owner, lease_until=now + self._settings.lease)
            )
            row = (await uow.connection.execute(sa.select(_table).where(_table.c.partner_id == partner_id))).first()
            await uow.commit()
        return _from_row(row) if taken.rowcount and row is not None else None

    async def _deliver(self, endpoint: Endpoint) -> int:
        async with self._uow(read_only=True) as uow:
            events = await uow.partner_events.after(
                endpoint.partner_id, endpoint.delivered_seq, self._settings.batch, EventFilter()
            )
        stub = events_pb2_grpc.EventReceiverServiceStub(self._channel(endpoint))
        delivered = 0
        for event in events:
            request = events_pb2.ReceiveEventRequest(request_id=event.event_id, signed_event=await self._signed(event))
            try:
                await stub.ReceiveEvent(request, timeout=self._settings.deadline_seconds)
            except grpc.aio.AioRpcError as error:
                await self._failed(endpoint, error.code().name)
                return delivered
            await self._record(endpoint, delivered_seq=event.seq)
            delivered += 1
        await self._record(endpoint, release=True)
        return delivered

    async def _signed(self, event: PartnerEvent) -> str:
        claims = {
            "iss": self._issuer,
            "aud": f"partners/{event.partner_id}",
            "iat": int(self._clock().timestamp()),
            "jti": event.event_id,
            "txn": format_cursor(event.seq),
            "events": {
                event.type.value: {
                    "resource": event.resource,
                    "consent": f"consents/{event.consent_id}" if event.consent_id else "",
                    "event_time": event.event_time.isoformat(),
                    "data": event.data,
                }
            },
        }
        return await self._sign(claims)

    async def _record(self, endpoint: Endpoint, *, delivered_seq: int | None = None, release: bool = False) -> None:
        values: dict[str, Any] = {"updated_at": self._clock()}
        if delivered_seq is not None:
            values.update(delivered_seq=delivered_seq, failed_attempts=0, last_error="")
        if release:
            values.update(lease_owner=None, lease_until=None)
        await self._update(endpoint, values)

    async def _failed(self, endpoint: Endpoint, error: str) -> None:
        async with self._uow(read_only=True) as uow:
            row = (
                await uow.connection.execute(sa.select(_table).where(_table.c.partner_id == endpoint.partner_id))
            ).first()
        failures = (int(row.failed_attempts) if row is not None else 0) + 1
        now = self._clock()
        values: dict[str, Any] = {
            "failed_attempts": failures,
            "last_error": error[:64],
            "next_attempt_at": now + backoff(failures, self._settings),
            "lease_owner": None,
            "lease_until": None,
            "updated_at": now,
        }
        if failures >= endpoint.max_attempts:
            values["state"] = STOPPED
            log.warning("event push stopped after repeated failures", extra={"partner_id": endpoint.partner_id})
        await self._update(endpoint, values)

    async def _update(self, endpoint: Endpoint, values: dict[str, Any]) -> None:
        async with self._uow() as uow:
            await uow.connection.execute(
                _table.update()
                .where(_table.c.partner_id == endpoint.partner_id, _table.c.lease_owner == self._owner)
                .values(**values)
            )
            await uow.commit()

    def _channel(self, endpoint: Endpoint) -> grpc.aio.Channel:
        key = (endpoint.target, endpoint.insecure)
        if key not in self._channels:
            self._channels[key] = self._channel_for(endpoint.target, endpoint.insecure)
        return self._channels[key]

    async def close(self) -> None:
        """Close the channels to partners."""
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


def _open_channel(target: str, insecure: bool) -> grpc.aio.Channel:
    if insecure:
        return grpc.aio.insecure_channel(target)
    return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials())
