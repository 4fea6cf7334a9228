"""Account movements at identity's intake, with fakes: a movement handed over for the account's
customer joins the log of each consent that covers the account with READ_TRANSACTIONS and was
authorised, not paused and not expired when the money moved; once per consent, in order with
the other events of the call, and once only when relayed again."""

from __future__ import annotations

import datetime as dt
from typing import Any

from meshlib.fanout import Fanout
from services.identity.domain.events import ConsentCover, EventType, NewEvent, movement_events
from services.identity.event_service import PartnerEventLog

NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def _cover(consent_id: str, partner_id: str = "acme", **changes: Any) -> ConsentCover:
    fields: dict[str, Any] = dict(
        consent_id=consent_id,
        partner_id=partner_id,
        permissions=frozenset({"READ_ACCOUNTS", "READ_TRANSACTIONS"}),
        account_ids=frozenset({"a1", "a2"}),
        paused=False,
        authorised_at=NOW - DAY,
        expires_at=NOW + DAY,
    )
    fields.update(changes)
    return ConsentCover(**fields)


def _movement(seq: int, account_id: str = "a1", kind: EventType = EventType.ACCOUNT_DEBITED) -> NewEvent:
    return NewEvent(
        partner_id="",
        type=kind,
        resource=f"accounts/{account_id}",
        consent_id="",
        event_time=NOW,
        data={"currency": "EUR", "minor_units": 250, "masked_account_number": "••••1234", "reference": "payments/p1"},
        source_key=f"account:{seq}",
        customer_id="cust-alice",
    )


def test_only_consents_covering_the_account_with_read_transactions_when_it_moved_are_told() -> None:
    consents = [
        _cover("c-yes"),
        _cover("c-other-wallet", partner_id="globex"),
        _cover("c-no-transactions", permissions=frozenset({"READ_ACCOUNTS", "READ_BALANCES", "INITIATE_PAYMENTS"})),
        _cover("c-other-account", account_ids=frozenset({"a2"})),
        _cover("c-paused", paused=True),
        _cover("c-later", authorised_at=NOW + dt.timedelta(seconds=1)),
        _cover("c-expired", expires_at=NOW),
    ]
    told = movement_events(_movement(7), consents)
    assert [(e.partner_id, e.consent_id, e.source_key) for e in told] == [
        ("acme", "c-yes", "account:7:c-yes"),
        ("globex", "c-other-wallet", "account:7:c-other-wallet"),
    ]
    assert all(e.customer_id == "" and e.resource == "accounts/a1" and e.data["minor_units"] == 250 for e in told)


class FakeEvents:
    """identity's partner_events repository: consents by customer, an append-once log."""

    def __init__(self, covers: dict[str, list[ConsentCover]]) -> None:
        self.covers = covers
        self.log: list[NewEvent] = []
        self.asked: list[set[str]] = []

    async def consents_covering(self, customer_ids: set[str]) -> dict[str, list[ConsentCover]]:
        self.asked.append(set(customer_ids))
        return {c: self.covers[c] for c in customer_ids if c in self.covers}

    async def append(self, events: list[NewEvent]) -> int:
        known = {e.source_key for e in self.log}
        fresh = [e for e in events if e.source_key not in known]
        self.log += fresh
        return len(fresh)


class FakeUow:
    def __init__(self, events: FakeEvents) -> None:
        self.partner_events = events

    async def __aenter__(self) -> FakeUow:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        return None

    async def commit(self) -> None:
        return None


async def test_the_intake_appends_a_movement_per_consent_in_order_and_once() -> None:
    events = FakeEvents({"cust-alice": [_cover("c1"), _cover("c2", partner_id="globex")]})
    log = PartnerEventLog(lambda **_: FakeUow(events), lambda: NOW, Fanout())  # type: ignore[arg-type]
    payment = NewEvent("acme", EventType.PAYMENT_STATE_CHANGED, "payments/p1", "c1", NOW, {}, "payment:1")
    batch = [_movement(1), payment, _movement(2, "a2", EventType.ACCOUNT_CREDITED), _movement(3, "a9")]
    assert await log.append(batch) == 5
    assert events.asked == [{"cust-alice"}]  # one look-up for the whole call
    assert [(e.source_key, e.partner_id, e.consent_id, e.type) for e in events.log] == [
        ("account:1:c1", "acme", "c1", EventType.ACCOUNT_DEBITED),
        ("account:1:c2", "globex", "c2", EventType.ACCOUNT_DEBITED),
        ("payment:1", "acme", "c1", EventType.PAYMENT_STATE_CHANGED),
        ("account:2:c1", "acme", "c1", EventType.ACCOUNT_CREDITED),
        ("account:2:c2", "globex", "c2", EventType.ACCOUNT_CREDITED),
    ]
    # The relay sends the same rows again (it died before recording its position): nothing new.
    assert await log.append(batch) == 0
    assert len(events.log) == 5
