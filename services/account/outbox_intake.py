"""What account's outboxes share on their way to identity's partner event log: the intake
they hand rows to (``EventIntakeService.AppendEvents``) and their relay's lease row in
``outbox_relays`` (meshlib.outbox). The movements outbox (event_relay.py) and the credit
outbox (credit_events.py) differ only in their rows and how a row becomes an event."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Generic, TypeVar

from meshlib.clients import PeerCaller
from meshlib.outbox import advance_lease, claim_lease
from openbank.events.v1 import events_pb2, events_pb2_grpc
from services.account.tables import outbox_relays
from services.account.unit_of_work import AccountUnitOfWork

Row = TypeVar("Row")


class IdentityIntakeSink(Generic[Row]):
    """identity's EventIntakeService over gRPC, each row made an event by ``to_event``."""

    def __init__(self, channel: object, call: PeerCaller, to_event: Callable[[Row], events_pb2.IntakeEvent]) -> None:
        self._stub = events_pb2_grpc.EventIntakeServiceStub(channel)
        self._call = call
        self._to_event = to_event

    async def append(self, rows: list[Row]) -> None:
        """One AppendEvents for the rows."""
        request = events_pb2.AppendEventsRequest(
            request_id=uuid.uuid4().hex, events=[self._to_event(row) for row in rows]
        )
        await self._call(self._stub.AppendEvents, request, "events.AppendEvents")


class OutboxLease:
    """An outbox relay's lease row ``name`` in account's database."""

    def __init__(self, uow: Callable[..., AccountUnitOfWork], name: str) -> None:
        self._uow = uow
        self._name = name

    async def claim(self, owner: str, now: dt.datetime, lease: dt.timedelta) -> int | None:
        """Take or renew the relay's lease; its position when this replica holds it."""
        async with self._uow() as uow:
            position = await claim_lease(uow.connection, outbox_relays, self._name, owner, now, lease)
            await uow.commit()
            return position

    async def advance(self, owner: str, position: int) -> bool:
        """Record the relayed position, if this replica still holds the lease."""
        async with self._uow() as uow:
            moved = await advance_lease(uow.connection, outbox_relays, self._name, owner, position)
            await uow.commit()
            return moved
