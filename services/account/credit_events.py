"""The credit offers' and lines' outbox (``credit_events``) relayed to identity's partner event
log, as the movements outbox is (services/account/event_relay.py): one replica at a time, the
holder of the ``credit-events`` lease row of ``outbox_relays`` (meshlib.outbox), hands the rows
in order to ``EventIntakeService.AppendEvents``, each once by its source key ``credit:{seq}``,
to the log of the partner that asked for the offer."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from meshlib.clients import PeerCaller
from meshlib.outbox import LeasedRelay, run_ticks
from meshlib.storage import as_utc
from openbank.events.v1 import events_pb2
from services.account.credit_tables import credit_events
from services.account.outbox_intake import IdentityIntakeSink, OutboxLease
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


class IdentityCreditSink(IdentityIntakeSink[CreditEventRow]):
    """identity's EventIntakeService over gRPC."""

    def __init__(self, channel: object, call: PeerCaller) -> None:
        super().__init__(channel, call, intake_event)


class SqlCreditOutbox(OutboxLease):
    """The outbox and its relay's lease row in account's database."""

    def __init__(self, uow: Callable[..., AccountUnitOfWork]) -> None:
        super().__init__(uow, RELAY_NAME)

    async def rows_after(self, seq: int, limit: int) -> list[CreditEventRow]:
        """Outbox rows after ``seq``, in order."""
        query = sa.select(credit_events).where(credit_events.c.seq > seq).order_by(credit_events.c.seq).limit(limit)
        async with self._uow(read_only=True) as uow:
            return [
                CreditEventRow(
                    int(r.seq),
                    r.partner_id,
                    r.consent_id,
                    r.kind,
                    r.resource,
                    r.state,
                    r.reason,
                    r.account_id,
                    r.related,
                    as_utc(r.event_time),
                )
                for r in await uow.connection.execute(query)
            ]


class CreditEventRelay:
    """Relays the outbox while this replica holds the lease (offers and lines are few: the
    rows are kept, as the offers and lines themselves are)."""

    def __init__(self, relay: LeasedRelay[CreditEventRow], interval_seconds: float) -> None:
        self.relay = relay
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin relaying."""
        self._task = asyncio.create_task(
            run_ticks("credit events relay", self.relay.relay_due, self._interval), name="credit-events-relay"
        )

    async def stop(self) -> None:
        """Stop relaying (rows not relayed yet wait for the next replica holding the lease)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
