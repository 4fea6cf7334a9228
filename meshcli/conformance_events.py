"""The conformance checks of the partner event log (openbank.events.v1): the stream gets a
new event once, with a cursor, and aggregated polling answers the same events and
acknowledges them.

A mixin of :class:`meshcli.conformance_checks.ConformanceRun`: it uses the run's client, its
call recorder and the consent session an earlier check authorised.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import grpc

from meshcli.conformance_support import CheckFailed, _expect, expect_error, ob
from openbank.events.v1 import events_pb2

if TYPE_CHECKING:
    from meshcli.conformance_checks import ConformanceConfig

STREAM_METHOD = "/openbank.events.v1.EventService/StreamEvents"


class EventChecks:
    """Checks of EventService (the run provides the attributes below)."""

    config: ConformanceConfig
    client: ob.OpenBankClient
    partner: str
    recorder: Any

    def _consent_session(self) -> ob.ConsentSession:
        raise NotImplementedError

    async def events_stream_and_poll(self) -> str:
        events = ob.PartnerEvents(self.client)
        before = await events.poll(max_events=1000)
        while before.more_available:  # the end of the partner's log so far
            last = before.events[-1].cursor
            before = await events.poll(after_cursor=last, max_events=1000)
        start = before.events[-1].cursor if before.events else "0"
        events.store.save(start)
        seen: list[events_pb2.Event] = []

        async def stream() -> None:
            async for event in events.stream(max_reconnects=1):
                seen.append(event)

        streaming = asyncio.create_task(stream())
        try:
            session = self._consent_session()
            payment = await session.create_payment(
                self.config.customer_account, ob.money(104, "EUR"), creditor_wallet=self.partner
            )
            for _ in range(200):
                if streaming.done():
                    streaming.result()
                    raise CheckFailed("the stream ended")
                if any(e.resource == payment.name for e in seen):
                    break
                await asyncio.sleep(0.05)
            else:
                raise CheckFailed("no event of the new payment on the stream within 10 s")
            self.recorder.record(STREAM_METHOD, grpc.StatusCode.OK)
        except ob.OpenBankError as error:
            self.recorder.record(STREAM_METHOD, error.code)
            raise
        finally:
            streaming.cancel()
            with contextlib.suppress(asyncio.CancelledError, ob.OpenBankError):
                await streaming
        cursors = [int(e.cursor) for e in seen]
        _expect(cursors == list(range(int(start) + 1, int(start) + 1 + len(seen))), f"cursors {cursors[:10]}")
        polled = await events.poll(after_cursor=start, max_events=len(seen), ack_cursor=seen[-1].cursor)
        _expect([e.event_id for e in polled.events] == [e.event_id for e in seen], "polling answers other events")
        _expect(polled.acknowledged_cursor == seen[-1].cursor, f"acknowledged {polled.acknowledged_cursor!r}")
        return f"{len(seen)} event(s) streamed and polled, cursors {start}+1..{cursors[-1]}"

    async def events_endpoint(self) -> str:
        events = ob.PartnerEvents(self.client)
        try:
            endpoint = await events.get_endpoint()
            found = f"{endpoint.target} {events_pb2.EventEndpointState.Name(endpoint.state)}"
        except ob.NotFound:
            found = "none registered"
        # A malformed target is refused naming the field (nothing is registered).
        refused = await expect_error(
            events.set_endpoint("not a host and port"), grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID"
        )
        return f"endpoint: {found}; {refused}"
