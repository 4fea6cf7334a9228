"""identity's partner event log as the other services' outbox relays hand rows to it
(``EventIntakeService.AppendEvents``, internal): one peer per process, with a token of its own
(``events:write``) so that a deployment not granting the scope loses only the relays; a sink per
outbox, each row made an event by the outbox's own conversion (its ``source_key`` makes a row
sent again harmless)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

import grpc

from meshlib.app import Runtime, ServiceSettings
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.clients import PeerCaller

if TYPE_CHECKING:  # generated code, imported where it is used (as the rest of meshlib does)
    from openbank.events.v1 import events_pb2

EVENTS_WRITE_SCOPE = "events:write"

Row = TypeVar("Row")


class IdentityIntakeSink(Generic[Row]):
    """identity's EventIntakeService over gRPC, each row made an event by ``to_event``."""

    def __init__(self, channel: object, call: PeerCaller, to_event: Callable[[Row], events_pb2.IntakeEvent]) -> None:
        from openbank.events.v1 import events_pb2_grpc

        self._stub = events_pb2_grpc.EventIntakeServiceStub(channel)
        self._call = call
        self._to_event = to_event

    async def append(self, rows: list[Row]) -> None:
        """One AppendEvents for the rows, under a fresh request id (none for no rows)."""
        from openbank.events.v1 import events_pb2

        if not rows:
            return
        request = events_pb2.AppendEventsRequest(
            request_id=uuid.uuid4().hex, events=[self._to_event(row) for row in rows]
        )
        await self._call(self._stub.AppendEvents, request, "events.AppendEvents")


@dataclass(frozen=True)
class IdentityIntake:
    """The process's one channel and call to identity's intake (one token source for all of
    its relays)."""

    channel: grpc.aio.Channel
    call: PeerCaller

    def sink(self, to_event: Callable[[Row], events_pb2.IntakeEvent]) -> IdentityIntakeSink[Row]:
        """A sink for an outbox whose rows ``to_event`` makes events."""
        return IdentityIntakeSink(self.channel, self.call, to_event)


def identity_intake(runtime: Runtime, *, enabled: bool, deadline_seconds: float) -> IdentityIntake | None:
    """The peer to append events with (one attempt per call: the relay's next round is the
    retry); None when relaying is switched off or the service has no internal client
    credentials (its rows wait in its outbox). Build it once per process."""
    settings: ServiceSettings = runtime.settings
    if not (enabled and settings.service_client_id and settings.service_client_secret):
        return None
    channel = runtime.channel(settings.identity_target)
    tokens = ServiceTokenSource(
        channel, settings.service_client_id, settings.service_client_secret, [EVENTS_WRITE_SCOPE]
    )
    return IdentityIntake(channel, PeerCaller(tokens.token, deadline_seconds=deadline_seconds, attempts=1))
