"""The movements outbox (``account_events``) relayed to identity's partner event log.

One replica at a time relays, under the ``partner-events`` lease row of ``outbox_relays``
(meshlib.outbox.RelayLoop, the same relay as payment's): rows in order to identity's intake
(meshlib.event_intake), each once by its source key ``account:{seq}``. A row names the
account's customer, not a partner: identity appends it for each consent of that customer
covering the account with READ_TRANSACTIONS (it keeps the consents). Relayed rows older than
the retention period are purged hourly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from meshlib.outbox import SqlOutboxStore
from openbank.common.v1 import money_pb2
from openbank.events.v1 import events_pb2
from services.account.tables import account_events, outbox_relays
from services.account.unit_of_work import AccountUnitOfWork

RELAY_NAME = "partner-events"
_TYPES = {"DEBIT": events_pb2.EVENT_TYPE_ACCOUNT_DEBITED, "CREDIT": events_pb2.EVENT_TYPE_ACCOUNT_CREDITED}


@dataclass(frozen=True)
class MovementRow:
    """One outbox row as the relay hands it over."""

    seq: int
    account_id: str
    customer_id: str
    direction: str
    amount: int
    currency: str
    masked_number: str
    reference: str
    event_time: dt.datetime


def intake_event(row: MovementRow) -> events_pb2.IntakeEvent:
    """The row as identity's intake takes it: for the customer's consents, not one partner."""
    event = events_pb2.Event(
        type=_TYPES[row.direction],
        resource=f"accounts/{row.account_id}",
        account=events_pb2.AccountMovement(
            amount=money_pb2.Money(currency_code=row.currency, minor_units=row.amount),
            masked_account_number=row.masked_number,
            reference=row.reference,
        ),
    )
    event.event_time.FromDatetime(row.event_time)
    return events_pb2.IntakeEvent(source_key=f"account:{row.seq}", customer=f"customers/{row.customer_id}", event=event)


class SqlMovementOutbox(SqlOutboxStore[MovementRow]):
    """The outbox and the relay's lease row in account's database."""

    def __init__(self, uow: Callable[..., AccountUnitOfWork]) -> None:
        super().__init__(uow, account_events, outbox_relays, RELAY_NAME, MovementRow)
