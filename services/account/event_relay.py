"""The movements outbox (``account_events``) relayed to identity's partner event log.

One replica at a time relays, under the lease of ``outbox_relays`` (meshlib.outbox, the same
relay as payment's): rows in order to ``EventIntakeService.AppendEvents``, each once by its
source key ``account:{seq}``. A row names the account's customer, not a partner: identity
appends it for each consent of that customer covering the account with READ_TRANSACTIONS (it
keeps the consents). Relayed rows older than the retention period are purged hourly.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from meshlib.clients import PeerCaller
from meshlib.outbox import LeasedRelay, run_ticks
from meshlib.periodic import Periodic
from meshlib.storage import as_utc
from openbank.common.v1 import money_pb2
from openbank.events.v1 import events_pb2
from services.account.outbox_intake import IdentityIntakeSink, OutboxLease
from services.account.tables import account_events, outbox_relays
from services.account.unit_of_work import AccountUnitOfWork

log = logging.getLogger("account.events")

RELAY_NAME = "partner-events"
RETENTION_INTERVAL_SECONDS = 3600.0
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


class IdentityMovementSink(IdentityIntakeSink[MovementRow]):
    """identity's EventIntakeService over gRPC."""

    def __init__(self, channel: object, call: PeerCaller) -> None:
        super().__init__(channel, call, intake_event)


class SqlMovementOutbox(OutboxLease):
    """The outbox and the relay's lease row in account's database."""

    def __init__(self, uow: Callable[..., AccountUnitOfWork]) -> None:
        super().__init__(uow, RELAY_NAME)

    async def rows_after(self, seq: int, limit: int) -> list[MovementRow]:
        """Outbox rows after ``seq``, in order."""
        query = sa.select(account_events).where(account_events.c.seq > seq).order_by(account_events.c.seq).limit(limit)
        async with self._uow(read_only=True) as uow:
            return [
                MovementRow(
                    int(r.seq),
                    r.account_id,
                    r.customer_id,
                    r.direction,
                    int(r.amount),
                    r.currency,
                    r.masked_number,
                    r.reference,
                    as_utc(r.event_time),
                )
                for r in await uow.connection.execute(query)
            ]

    async def purge(self, recorded_before: dt.datetime) -> int:
        """Delete relayed rows older than the cutoff (never a row not yet relayed)."""
        async with self._uow() as uow:
            relayed = await uow.connection.scalar(
                sa.select(outbox_relays.c.position).where(outbox_relays.c.name == RELAY_NAME)
            )
            deleted = await uow.connection.execute(
                account_events.delete().where(
                    account_events.c.event_time < recorded_before, account_events.c.seq <= int(relayed or 0)
                )
            )
            await uow.commit()
            return deleted.rowcount or 0


class MovementRelay:
    """Relays the outbox while this replica holds the lease; purges what is old and relayed."""

    def __init__(
        self,
        outbox: SqlMovementOutbox,
        sink: IdentityMovementSink,
        *,
        clock: Callable[[], dt.datetime],
        lease: dt.timedelta = dt.timedelta(seconds=10),
        gap_seconds: float = 3.0,
        retention: dt.timedelta = dt.timedelta(days=30),
        interval_seconds: float = 0.1,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._outbox = outbox
        self._clock = clock
        self._retention = retention
        self._interval = interval_seconds
        self.relay = LeasedRelay(
            outbox,
            sink,
            clock=clock,
            lease=lease,
            gap_seconds=gap_seconds,
            interval_seconds=interval_seconds,
            monotonic=monotonic,
        )
        self._retention_job = Periodic("account-events-retention", RETENTION_INTERVAL_SECONDS, self._purge)
        self._task: asyncio.Task[None] | None = None

    async def purge_once(self) -> int:
        """Retention: relayed rows older than the period go."""
        return await self._outbox.purge(self._clock() - self._retention)

    async def _purge(self) -> None:
        removed = await self.purge_once()
        if removed:
            log.info("purged relayed account events", extra={"rows": removed})

    async def start(self) -> None:
        """Begin relaying, and the hourly retention."""
        self._task = asyncio.create_task(
            run_ticks("account events relay", self.relay.relay_due, self._interval), name="account-events-relay"
        )
        await self._retention_job.start()

    async def stop(self) -> None:
        """Stop both."""
        await self._retention_job.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
