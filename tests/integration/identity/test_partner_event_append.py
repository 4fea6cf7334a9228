"""The partner event log's bulk append on SQLite and PostgreSQL, below gRPC: one call with
several partners' events numbers each partner's events gaplessly in the order given, appends
each source key once (inside the call, across calls, and when two replicas are handed the
same events at once), tells the fan-out each grown partner's head once, and two replicas
appending for the same partners at the same time take turns on the head rows: none is refused
or run again, and each replica's events keep their order."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import AsyncIterator
from functools import partial

import pytest

from meshlib.storage import Database
from meshlib.storage.migrations import upgrade_to_head
from services.identity.bootstrap import VERSIONS_DIR
from services.identity.domain.events import EventFilter, EventType, NewEvent, PartnerEvent
from services.identity.event_service import PartnerEventLog
from services.identity.unit_of_work import IdentityUnitOfWork

NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)


class Replica:
    """One identity replica's event log: its own engine (connections) on the shared store."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.announced: list[dict[str, int]] = []

        async def announce(heads: dict[str, int]) -> None:
            self.announced.append(heads)

        uow = partial(IdentityUnitOfWork, database, notify=announce, clock=lambda: NOW)
        self.log = PartnerEventLog(uow, lambda: NOW, None)  # type: ignore[arg-type]
        self.uow = uow

    async def events(self, partner_id: str) -> list[PartnerEvent]:
        async with self.uow(read_only=True) as uow:
            return await uow.partner_events.after(partner_id, 0, 10_000, EventFilter())

    async def last(self, partner_id: str) -> int:
        async with self.uow(read_only=True) as uow:
            last, _, _ = await uow.partner_events.head(partner_id)
            return last


@pytest.fixture
async def replicas(database_url: str) -> AsyncIterator[tuple[Replica, Replica]]:
    first, second = Database(database_url), Database(database_url)
    await upgrade_to_head(first, VERSIONS_DIR, "identity")
    try:
        yield Replica(first), Replica(second)
    finally:
        await first.dispose()
        await second.dispose()


def _event(partner_id: str, key: str | None, resource: str = "") -> NewEvent:
    return NewEvent(
        partner_id=partner_id,
        type=EventType.PAYMENT_STATE_CHANGED,
        resource=resource or f"payments/{key}",
        consent_id="c1",
        event_time=NOW,
        data={"state": "SETTLED", "previous_state": "PENDING", "status_reason": ""},
        source_key=key,
    )


def _numbered(events: list[PartnerEvent]) -> list[tuple[int, str]]:
    return [(e.seq, e.resource) for e in events]


async def test_a_batch_numbers_each_partner_in_order_and_appends_each_source_key_once(
    replicas: tuple[Replica, Replica],
) -> None:
    replica, _ = replicas
    interleaved = [
        _event("bravo", "p:1"),
        _event("alpha", "p:2"),
        _event("alpha", "p:3"),
        _event("charlie", "p:4"),
        _event("bravo", "p:5"),
        _event("alpha", "p:6"),
    ]
    assert await replica.log.append(interleaved) == 6
    assert _numbered(await replica.events("alpha")) == [(1, "payments/p:2"), (2, "payments/p:3"), (3, "payments/p:6")]
    assert _numbered(await replica.events("bravo")) == [(1, "payments/p:1"), (2, "payments/p:5")]
    assert _numbered(await replica.events("charlie")) == [(1, "payments/p:4")]
    assert replica.announced == [{"alpha": 3, "bravo": 2, "charlie": 1}]  # once per partner per batch

    # A relay's retry with more behind it: old keys, a key twice in the call, a new partner.
    again = [
        *interleaved[3:],
        _event("alpha", "p:7"),
        _event("alpha", "p:7", resource="payments/twin"),
        _event("delta", "p:8"),
        _event("bravo", "p:9"),
    ]
    assert await replica.log.append(again) == 3
    assert _numbered(await replica.events("alpha"))[3:] == [(4, "payments/p:7")]
    assert _numbered(await replica.events("bravo"))[2:] == [(3, "payments/p:9")]
    assert _numbered(await replica.events("delta")) == [(1, "payments/p:8")]
    assert replica.announced[1:] == [{"alpha": 4, "delta": 1, "bravo": 3}]

    # Nothing new: nothing appended, no head moved, nobody told.
    assert await replica.log.append(again) == 0
    assert [await replica.last(p) for p in ("alpha", "bravo", "charlie", "delta")] == [4, 3, 1, 1]
    assert len(replica.announced) == 2


async def test_events_recorded_with_their_change_have_no_source_key_and_each_is_appended(
    replicas: tuple[Replica, Replica],
) -> None:
    replica, _ = replicas
    async with replica.uow() as uow:
        for resource in ("consents/c1", "consents/c1", "consents/c2"):
            uow.partner_events.record(_event("alpha", None, resource=resource))
        await uow.commit()
    events = await replica.events("alpha")
    assert _numbered(events) == [(1, "consents/c1"), (2, "consents/c1"), (3, "consents/c2")]
    assert len({e.event_id for e in events}) == 3 and all(len(e.event_id) == 32 for e in events)


async def test_two_replicas_appending_at_once_take_turns_and_append_each_event_once(
    replicas: tuple[Replica, Replica], caplog: pytest.LogCaptureFixture
) -> None:
    first, second = replicas
    partners = ["alpha", "bravo", "charlie"]
    await first.log.append([_event(p, f"start:{p}") for p in partners])  # the heads exist
    caplog.set_level(logging.INFO, logger="meshlib.storage")
    rounds = 12

    def batch(source: str, number: int) -> list[NewEvent]:
        # Each source's events for every partner, in its own order (keys like a relay's).
        return [_event(p, f"{source}:{number}:{p}") for p in (partners if number % 2 else partners[::-1])]

    async def relay(replica: Replica, source: str) -> None:
        for number in range(rounds):
            await replica.log.append(batch(source, number))

    async def retried_relay(source: str) -> None:
        # The same calls handed to both replicas at once (a relay's retry after a lost answer).
        for number in range(rounds):
            await asyncio.gather(first.log.append(batch(source, number)), second.log.append(batch(source, number)))

    await asyncio.gather(relay(first, "payment"), relay(second, "account"), retried_relay("settlement"))

    for partner in partners:
        events = await first.events(partner)
        assert [e.seq for e in events] == list(range(1, 1 + 1 + 3 * rounds))  # gapless, each once
        assert await second.last(partner) == len(events)
        for source in ("payment", "account", "settlement"):
            mine = [e.resource for e in events if e.resource.startswith(f"payments/{source}:")]
            assert mine == [f"payments/{source}:{n}:{partner}" for n in range(rounds)]
    reruns = [r.getMessage() for r in caplog.records if r.name == "meshlib.storage"]
    assert reruns == []  # the head lock made them wait, nothing conflicted
