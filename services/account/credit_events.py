"""The credit offers' and lines' outbox (``credit_events``) relayed to identity's partner event
log, as the movements outbox is (services/account/event_relay.py): one replica at a time, the
holder of the ``credit-events`` lease row of ``outbox_relays`` (meshlib.outbox.RelayLoop), hands
the rows in order to identity's intake (meshlib.event_intake), each once by its source key
``credit:{seq}``, to the log of the partner that asked for the offer."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from meshlib.outbox import SqlOutboxStore
from openbank.events.v1 import events_pb2
from services.account.credit_tables import credit_events
from services.account.tables import outbox_relays
from services.account.unit_of_work import AccountUnitOfWork

RELAY_NAME = "credit-events"
_TYPES = {
    "OFFER": (events_pb2.EVENT_TYPE_CREDIT_OFFER_STATE_CHANGED, "CREDIT_OFFER_STATE_"),
    "LINE": (events_pb2.EVENT_TYPE_CREDIT_LINE_STATE_CHANGED, "CREDIT_LINE_STATE_"),
}


@dataclass(frozen=True)
class CreditEventRow:
    """One outbox row as the relay hands it over."""

    seq: int
    partner_id: str
    consent_id: str
    kind: str
    resource: str
    state: str
    reason: str
    account_id: str
    related: str
    event_time: dt.datetime


def intake_event(row: CreditEventRow) -> events_pb2.IntakeEvent:
    """The row as identity's intake takes it: for the partner that asked for the offer."""
    event_type, prefix = _TYPES[row.kind]
    event = events_pb2.Event(
        type=event_type,
        resource=row.resource,
        consent=f"consents/{row.consent_id}",
        credit=events_pb2.CreditStateChange(
            state=prefix + row.state,
            reason=f"CREDIT_REFUSAL_REASON_{row.reason}" if row.reason else "",
            account=f"accounts/{row.account_id}",
            related=row.related,
        ),
    )
    event.event_time.FromDatetime(row.event_time)
    return events_pb2.IntakeEvent(source_key=f"credit:{row.seq}", partner=f"partners/{row.partner_id}", event=event)


class SqlCreditOutbox(SqlOutboxStore[CreditEventRow]):
    """The outbox and its relay's lease row in account's database (offers and lines are few:
    the rows are kept, as the offers and lines themselves are; no retention)."""

    def __init__(self, uow: Callable[..., AccountUnitOfWork]) -> None:
        super().__init__(uow, credit_events, outbox_relays, RELAY_NAME, CreditEventRow)
