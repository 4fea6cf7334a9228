"""Credit offers' and lines' events at identity's intake (events.v1 CREDIT_*_STATE_CHANGED): the
account service's outbox row becomes the partner's event with its state, reason, account and
related resource, and a state that names no credit offer or line is refused."""

from __future__ import annotations

import datetime as dt

import pytest

from meshlib.errors import InvalidArgument
from openbank.events.v1 import events_pb2
from services.account.credit_events import CreditEventRow, intake_event
from services.identity.domain.events import EventType, PartnerEvent
from services.identity.event_servicer import event_message
from services.identity.event_servicer import intake_event as identity_intake

NOW = dt.datetime(2026, 12, 7, 12, tzinfo=dt.UTC)


def row(seq: int, kind: str, state: str, reason: str = "", related: str = "") -> CreditEventRow:
    resource = "creditOffers/o1" if kind == "OFFER" else "creditLines/l1"
    return CreditEventRow(seq, "acme", "c1", kind, resource, state, reason, "a1", related, NOW)


def test_a_refused_offer_reaches_the_partner_who_asked_with_its_reason() -> None:
    relayed = intake_event(row(3, "OFFER", "REFUSED", reason="INCOME_TOO_LOW"))
    assert (relayed.source_key, relayed.partner, relayed.customer) == ("credit:3", "partners/acme", "")
    new = identity_intake(relayed, 0)
    assert (new.partner_id, new.type, new.resource, new.consent_id) == (
        "acme",
        EventType.CREDIT_OFFER_STATE_CHANGED,
        "creditOffers/o1",
        "c1",
    )
    shown = event_message(
        PartnerEvent(
            seq=9,
            event_id="e9",
            partner_id="acme",
            type=new.type,
            resource=new.resource,
            consent_id=new.consent_id,
            event_time=new.event_time,
            data=new.data,
        )
    )
    assert shown.type == events_pb2.EVENT_TYPE_CREDIT_OFFER_STATE_CHANGED
    assert shown.credit == events_pb2.CreditStateChange(
        state="CREDIT_OFFER_STATE_REFUSED", reason="CREDIT_REFUSAL_REASON_INCOME_TOO_LOW", account="accounts/a1"
    )


def test_a_line_event_names_its_offer_and_a_foreign_state_is_refused() -> None:
    relayed = intake_event(row(4, "LINE", "CLOSED", related="creditOffers/o1"))
    new = identity_intake(relayed, 0)
    assert new.type is EventType.CREDIT_LINE_STATE_CHANGED
    assert new.data == {
        "state": "CREDIT_LINE_STATE_CLOSED",
        "reason": "",
        "account": "accounts/a1",
        "related": "creditOffers/o1",
    }
    relayed.event.credit.state = "PAYMENT_STATE_SETTLED"
    with pytest.raises(InvalidArgument):
        identity_intake(relayed, 0)
