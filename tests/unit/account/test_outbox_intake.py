"""The intake sink every outbox relay uses (meshlib.event_intake), with account's two outboxes'
conversions: one AppendEvents per batch, each row made an event by its outbox's own
conversion, under a fresh request_id."""

from __future__ import annotations

import datetime as dt
from typing import Any

from meshlib.event_intake import IdentityIntake
from services.account.credit_events import CreditEventRow
from services.account.credit_events import intake_event as credit_event
from services.account.event_relay import MovementRow
from services.account.event_relay import intake_event as movement_event

AT = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)


class Channel:
    def unary_unary(self, *args: Any, **kwargs: Any) -> object:
        return object()


class Calls(list[Any]):
    async def __call__(self, method: Any, request: Any, name: str) -> None:
        self.append((name, request))


async def test_each_outbox_hands_its_rows_as_one_append_of_its_own_events() -> None:
    calls = Calls()
    credit = CreditEventRow(7, "p1", "c1", "OFFER", "creditOffers/o1", "EXPIRED", "", "a1", "", AT)
    movement = MovementRow(8, "a1", "cust1", "DEBIT", 500, "EUR", "****1234", "payments/x", AT)
    intake = IdentityIntake(Channel(), calls)  # type: ignore[arg-type]
    await intake.sink(credit_event).append([credit, credit])
    await intake.sink(movement_event).append([movement])
    (name, first), (_, second) = calls
    assert name == "events.AppendEvents" and first.request_id and first.request_id != second.request_id
    assert [e.source_key for e in first.events] == ["credit:7", "credit:7"]
    assert first.events[0].event.credit.state == "CREDIT_OFFER_STATE_EXPIRED"
    assert first.events[0].partner == "partners/p1"
    assert [(e.source_key, e.customer, e.event.account.amount.minor_units) for e in second.events] == [
        ("account:8", "customers/cust1", 500)
    ]


async def test_no_rows_make_no_call() -> None:
    """Isolation's relay may find only changes nobody is to be told of."""
    calls = Calls()
    await IdentityIntake(Channel(), calls).sink(movement_event).append([])  # type: ignore[arg-type]
    assert calls == []
