"""The partner event log in identity's store (services.identity.domain.events says the rules).

Appending numbers a partner's events under a lock on its head row, in the appending
transaction: two transactions appending for one partner take turns, so the numbers follow
commit order with no gaps and a reader of ``seq > cursor`` never skips a late commit.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.storage import BulkInsert, as_utc
from services.identity.domain.consents import ConsentState
from services.identity.domain.events import ConsentCover, EventFilter, EventType, NewEvent, PartnerEvent
from services.identity.tables import consent_expiry_notices, consents, partner_event_heads, partner_events

_heads = partner_event_heads
_events = partner_events

_INSERT_EVENTS = BulkInsert(
    _events,
    (
        "partner_id",
        "seq",
        "event_id",
        "source_key",
        "event_type",
        "resource",
        "consent_id",
        "data",
        "event_time",
        "recorded_at",
    ),
)
_MOVE_HEAD = (
    _heads.update().where(_heads.c.partner_id == sa.bindparam("head_partner")).values(last_seq=sa.bindparam("head_seq"))
)
# One encoder for every event (json.dumps with options builds a new one per call).
_encode_data = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def _event_ids(count: int) -> list[str]:
    """``count`` random 128-bit ids in hex, from one read of the system's randomness."""
    digits = os.urandom(16 * count).hex()
    return [digits[start : start + 32] for start in range(0, 32 * count, 32)]


# Told the partners whose logs grew and their new heads, once the transaction committed.
HeadsNotifier = Callable[[dict[str, int]], Awaitable[None]]


def _from_row(row: Any) -> PartnerEvent:
    return PartnerEvent(
        partner_id=row.partner_id,
        seq=int(row.seq),
        event_id=row.event_id,
        type=EventType(row.event_type),
        resource=row.resource,
        consent_id=row.consent_id,
        event_time=as_utc(row.event_time) or dt.datetime.min.replace(tzinfo=dt.UTC),
        data=json.loads(row.data or "{}"),
    )


class PartnerEventRepository:
    """Append to and read partners' event logs; acknowledgements and retention."""

    def __init__(self, connection: AsyncConnection, clock: Callable[[], dt.datetime]) -> None:
        self._connection = connection
        self._clock = clock
        self._pending: list[NewEvent] = []
        self.appended_heads: dict[str, int] = {}  # partner -> new head, for the notifier

    def record(self, event: NewEvent) -> None:
        """Append ``event`` when the transaction commits (with the change that made it)."""
        self._pending.append(event)

    async def flush(self) -> None:
        """Append what :meth:`record` collected (run just before commit)."""
        pending, self._pending = self._pending, []
        if pending:
            await self.append(pending)

    async def append(self, events: list[NewEvent]) -> int:
        """Append ``events`` in order, each source_key once; how many were appended now.

        Per call, whatever the number of events or partners: one statement locks (or creates)
        the heads of the batch's partners, one finds the source keys already appended, one
        inserts the rows, one moves the heads. The known keys are read after the heads are
        locked, so a twin append (a relay's retry on another replica) that committed while
        this one waited is seen here, not refused later by the unique key.
        """
        if not events:
            return 0
        heads = await self._lock_heads(sorted({e.partner_id for e in events}))
        known = await self._known_source_keys([e.source_key for e in events if e.source_key is not None])
        ids = _event_ids(len(events))
        now = self._clock()
        rows: list[tuple[Any, ...]] = []
        for event, event_id in zip(events, ids, strict=True):
            source_key = event.source_key
            if source_key is None:
                source_key = f"identity:{event_id}"
            elif source_key in known:
                continue
            else:
                known.add(source_key)
            seq = heads[event.partner_id] = heads[event.partner_id] + 1
            rows.append(
                (
                    event.partner_id,
                    seq,
                    event_id,
                    source_key,
                    event.type.value,
                    event.resource,
                    event.consent_id,
                    _encode_data(event.data),
                    event.event_time,
                    now,
                )
            )
        if not rows:
            return 0
        await _INSERT_EVENTS.execute(self._connection, rows)
        grown = {partner_id: heads[partner_id] for partner_id in dict.fromkeys(row[0] for row in rows)}
        await self._connection.execute(
            _MOVE_HEAD, [{"head_partner": partner_id, "head_seq": seq} for partner_id, seq in grown.items()]
        )
        self.appended_heads.update(grown)
        return len(rows)

    async def _lock_heads(self, partner_ids: list[str]) -> dict[str, int]:
        """These partners' last numbers, their head rows locked until commit (in partner
        order, so two appenders never wait on each other crosswise; created when new: a
        concurrent creation fails one transaction, which the runner runs again)."""
        rows = await self._connection.execute(
            sa.select(_heads.c.partner_id, _heads.c.last_seq)
            .where(_heads.c.partner_id.in_(partner_ids))
            .order_by(_heads.c.partner_id)
            .with_for_update()
        )
        heads = {row.partner_id: int(row.last_seq) for row in rows}
        missing = [partner_id for partner_id in partner_ids if partner_id not in heads]
        if missing:
            await self._connection.execute(_heads.insert(), [{"partner_id": p, "last_seq": 0} for p in missing])
            heads.update(dict.fromkeys(missing, 0))
        return heads

    async def _known_source_keys(self, keys: list[str]) -> set[str]:
        """Which of ``keys`` were appended before."""
        if not keys:
            return set()
        rows = await self._connection.execute(sa.select(_events.c.source_key).where(_events.c.source_key.in_(keys)))
        return {row.source_key for row in rows}

    async def after(self, partner_id: str, after_seq: int, limit: int, chosen: EventFilter) -> list[PartnerEvent]:
        """The partner's events after ``after_seq`` that pass ``chosen``, in order."""
        query = sa.select(_events).where(_events.c.partner_id == partner_id, _events.c.seq > after_seq)
        if chosen.types:
            query = query.where(_events.c.event_type.in_(sorted(t.value for t in chosen.types)))
        if chosen.consent_ids:
            query = query.where(_events.c.consent_id.in_(sorted(chosen.consent_ids)))
        rows = await self._connection.execute(query.order_by(_events.c.seq).limit(limit))
        return [_from_row(r) for r in rows]

    async def head(self, partner_id: str) -> tuple[int, int, int]:
        """The partner's (last, acknowledged, purged) numbers; zeros before its first event."""
        row = (await self._connection.execute(sa.select(_heads).where(_heads.c.partner_id == partner_id))).first()
        if row is None:
            return 0, 0, 0
        return int(row.last_seq), int(row.acknowledged_seq), int(row.purged_seq)

    async def heads(self, partner_ids: list[str]) -> dict[str, int]:
        """The last numbers of these partners (one query, whatever their number)."""
        if not partner_ids:
            return {}
        rows = await self._connection.execute(
            sa.select(_heads.c.partner_id, _heads.c.last_seq).where(_heads.c.partner_id.in_(partner_ids))
        )
        return {r.partner_id: int(r.last_seq) for r in rows}

    async def acknowledge(self, partner_id: str, seq: int) -> int:
        """Acknowledge up to ``seq`` (never backwards, never past the head); the new position."""
        last, acknowledged, _ = await self.head(partner_id)
        position = max(acknowledged, min(seq, last))
        if position != acknowledged:
            await self._connection.execute(
                _heads.update()
                .where(_heads.c.partner_id == partner_id, _heads.c.acknowledged_seq < position)
                .values(acknowledged_seq=position)
            )
        return position

    async def purge(self, recorded_before: dt.datetime) -> int:
        """Delete events recorded before the cutoff, raising each partner's purged number
        first (so an older cursor is refused, never silently short); returns rows deleted."""
        rows = await self._connection.execute(
            sa.select(_events.c.partner_id, sa.func.max(_events.c.seq).label("upto"))
            .where(_events.c.recorded_at < recorded_before)
            .group_by(_events.c.partner_id)
        )
        removed = 0
        for row in rows.all():
            upto = int(row.upto)
            await self._connection.execute(
                _heads.update()
                .where(_heads.c.partner_id == row.partner_id, _heads.c.purged_seq < upto)
                .values(purged_seq=upto)
            )
            deleted = await self._connection.execute(
                _events.delete().where(_events.c.partner_id == row.partner_id, _events.c.seq <= upto)
            )
            removed += deleted.rowcount or 0
        return removed

    async def consents_covering(self, customer_ids: set[str]) -> dict[str, list[ConsentCover]]:
        """The authorised consents of these customers, by customer (one query)."""
        if not customer_ids:
            return {}
        query = sa.select(
            consents.c.consent_id,
            consents.c.partner_id,
            consents.c.customer_id,
            consents.c.permissions,
            consents.c.account_ids,
            consents.c.paused,
            consents.c.authorised_at,
            consents.c.expires_at,
        ).where(consents.c.customer_id.in_(sorted(customer_ids)), consents.c.state == ConsentState.AUTHORISED.value)
        found: dict[str, list[ConsentCover]] = {}
        for row in await self._connection.execute(query.order_by(consents.c.consent_id)):
            if row.authorised_at is None:
                continue
            found.setdefault(row.customer_id, []).append(
                ConsentCover(
                    consent_id=row.consent_id,
                    partner_id=row.partner_id,
                    permissions=frozenset(row.permissions.split()),
                    account_ids=frozenset(row.account_ids.split()),
                    paused=bool(row.paused),
                    authorised_at=as_utc(row.authorised_at),
                    expires_at=as_utc(row.expires_at),
                )
            )
        return found

    async def consents_to_notify(
        self, kind: EventType, due_before: dt.datetime, not_before: dt.datetime, limit: int
    ) -> list[tuple[str, str, dt.datetime]]:
        """Authorised consents expiring before ``due_before`` (and after ``not_before``) not yet
        told ``kind`` for that expire time: (consent, partner, expires_at)."""
        told = sa.exists().where(
            consent_expiry_notices.c.consent_id == consents.c.consent_id,
            consent_expiry_notices.c.kind == kind.value,
            consent_expiry_notices.c.expires_at == consents.c.expires_at,
        )
        query = (
            sa.select(consents.c.consent_id, consents.c.partner_id, consents.c.expires_at)
            .where(
                consents.c.state == ConsentState.AUTHORISED.value,
                consents.c.expires_at <= due_before,
                consents.c.expires_at > not_before,
                ~told,
            )
            .order_by(consents.c.expires_at)
            .limit(limit)
        )
        rows = await self._connection.execute(query)
        return [(r.consent_id, r.partner_id, as_utc(r.expires_at) or due_before) for r in rows]

    async def mark_notified(self, consent_id: str, kind: EventType, expires_at: dt.datetime) -> None:
        """Remember that the consent was told ``kind`` for this expire time."""
        await self._connection.execute(
            consent_expiry_notices.insert().values(consent_id=consent_id, kind=kind.value, expires_at=expires_at)
        )
