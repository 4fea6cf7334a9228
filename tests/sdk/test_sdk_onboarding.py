"""The SDK's await_decision against fake in-process servers (no mesh): woken by the event on the
partner's log, it reads the application again; a change told before its stream opened is found
by the periodic re-read; at the timeout it answers the application as it is."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import openbank_sdk as ob
import pytest_asyncio

from openbank.events.v1 import events_pb2, events_pb2_grpc
from openbank.identity.v1 import onboarding_pb2, onboarding_pb2_grpc, token_pb2_grpc
from tests.sdk.test_sdk_unit import FakeTokens

NAME = "applications/a1"
REFERRED = onboarding_pb2.APPLICATION_STATE_REFERRED
ACCOUNT_OPEN = onboarding_pb2.APPLICATION_STATE_ACCOUNT_OPEN


class FakeBank(onboarding_pb2_grpc.OnboardingServiceServicer, events_pb2_grpc.EventServiceServicer):
    """One application whose state the test sets; an event stream the test feeds."""

    def __init__(self) -> None:
        self.state = REFERRED
        self.reads = 0
        self.streams = 0
        self.events: asyncio.Queue[events_pb2.Event] = asyncio.Queue()

    async def GetApplication(self, request, context):  # type: ignore[no-untyped-def]
        self.reads += 1
        return onboarding_pb2.GetApplicationResponse(
            application=onboarding_pb2.Application(name=NAME, state=self.state)
        )

    async def StreamEvents(self, request, context):  # type: ignore[no-untyped-def]
        assert list(request.types) == [events_pb2.EVENT_TYPE_APPLICATION_STATE_CHANGED]
        self.streams += 1
        while True:
            yield events_pb2.StreamEventsResponse(event=await self.events.get())

    def decide(self, *, tell: bool) -> None:
        """An operator approves; the account opens; the log tells it (or the event came before)."""
        self.state = ACCOUNT_OPEN
        if tell:
            for resource in ("applications/other", NAME):
                self.events.put_nowait(
                    events_pb2.Event(
                        cursor=str(self.events.qsize() + 1),
                        type=events_pb2.EVENT_TYPE_APPLICATION_STATE_CHANGED,
                        resource=resource,
                        application=events_pb2.ApplicationStateChange(state="APPLICATION_STATE_ACCOUNT_OPEN"),
                    )
                )


@pytest_asyncio.fixture
async def bank() -> AsyncIterator[tuple[FakeBank, ob.OpenBankClient]]:
    fake = FakeBank()
    server = grpc.aio.server()
    token_pb2_grpc.add_TokenServiceServicer_to_server(FakeTokens(), server)
    onboarding_pb2_grpc.add_OnboardingServiceServicer_to_server(fake, server)
    events_pb2_grpc.add_EventServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = ob.OpenBankClient(ob.insecure_channel(f"127.0.0.1:{port}"), "client-1", "secret")
    yield fake, client
    await client.close()
    await server.stop(0)


async def _later(action: Any, seconds: float) -> None:
    await asyncio.sleep(seconds)
    action()


async def test_the_event_wakes_it_long_before_the_re_read(bank) -> None:  # type: ignore[no-untyped-def]
    fake, client = bank
    started = time.monotonic()
    decider = asyncio.create_task(_later(lambda: fake.decide(tell=True), 0.5))
    decided = await client.await_decision(NAME, timeout=30, recheck=20)
    await decider
    assert decided.state == ACCOUNT_OPEN and time.monotonic() - started < 5
    assert fake.streams == 1 and fake.reads == 2  # before waiting, and once told


async def test_a_change_before_the_stream_opened_is_found_by_the_re_read(bank) -> None:  # type: ignore[no-untyped-def]
    fake, client = bank
    started = time.monotonic()
    decider = asyncio.create_task(_later(lambda: fake.decide(tell=False), 0.3))
    decided = await client.await_decision(NAME, timeout=20, recheck=0.5)
    await decider
    assert decided.state == ACCOUNT_OPEN and fake.reads >= 2 and time.monotonic() - started < 5


async def test_at_the_timeout_it_answers_the_application_as_it_is(bank) -> None:  # type: ignore[no-untyped-def]
    _, client = bank
    started = time.monotonic()
    still = await client.await_decision(NAME, timeout=0.6, recheck=0.2)
    assert still.state == REFERRED and 0.6 <= time.monotonic() - started < 5
