"""Dynamic isolation in payment's database: each customer's capabilities (customer_capabilities)
and the outbox of their changes (isolation_events), inside the caller's transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.storage import as_utc
from services.payment.domain.isolation import CAPABILITIES, CapabilityState, Status
from services.payment.repository import typed_param
from services.payment.tables import customer_capabilities as table
from services.payment.tables import isolation_events, payments, spent_days

_c = table.c
# A use is written at most this often per capability: most payments then only read.
TOUCH_EVERY = dt.timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class PaymentGate:
    """What recording a payment needs of one capability: where it stands (the check) and
    whether its last use is older than TOUCH_EVERY (a use to write)."""

    status: Status
    limit_minor: int | None
    currency: str
    stale: bool


# Read for every group of payments recorded: no timestamps come back (the staleness is
# computed by the database), so a customer's six rows cost little to read.
_GATES = sa.select(
    _c.customer_id,
    _c.capability,
    _c.status,
    _c.limit_minor,
    _c.currency,
    sa.case((sa.or_(_c.last_used_at.is_(None), _c.last_used_at < typed_param("stale", _c.last_used_at)), 1), else_=0),
).where(_c.customer_id.in_(typed_param("cids", _c.customer_id, expanding=True)))


@dataclass(frozen=True)
class IsolationEvent:
    """A change of a customer's capability, as the outbox keeps it for the partners."""

    seq: int
    customer_id: str
    capability: str
    status: str
    limit_minor: int | None
    currency: str
    reason: str
    event_time: dt.datetime


def _state(row: Any) -> CapabilityState:
    return CapabilityState(
        customer_id=row.customer_id,
        capability=row.capability,
        since=as_utc(row.since) or dt.datetime.now(dt.UTC),
        last_used_at=as_utc(row.last_used_at),
        status=Status(row.status),
        limit_minor=None if row.limit_minor is None else int(row.limit_minor),
        currency=row.currency,
        reason=row.reason,
        policy_version=row.policy_version,
        changed_at=as_utc(row.changed_at),
        changed_by=row.changed_by,
    )


def _values(state: CapabilityState) -> dict[str, Any]:
    return {
        "status": state.status.value,
        "last_used_at": state.last_used_at,
        "limit_minor": state.limit_minor,
        "currency": state.currency,
        "reason": state.reason[:128],
        "policy_version": state.policy_version[:64],
        "changed_at": state.changed_at,
        "changed_by": state.changed_by[:128],
    }


class IsolationRepository:
    """The customers' capabilities and the outbox of their changes."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def load(self, customer_ids: Iterable[str]) -> dict[str, dict[str, CapabilityState]]:
        """Each customer's capabilities by name (a customer the bank never saw pay: absent)."""
        ids = sorted({c for c in customer_ids if c})
        found: dict[str, dict[str, CapabilityState]] = {}
        if not ids:
            return found
        rows = await self._connection.execute(sa.select(table).where(_c.customer_id.in_(ids)))
        for row in rows:
            found.setdefault(row.customer_id, {})[row.capability] = _state(row)
        return found

    async def gates(self, customer_ids: Iterable[str], now: dt.datetime) -> dict[str, dict[str, PaymentGate]]:
        """Each customer's capabilities as recording a payment needs them (absent: never seen)."""
        ids = sorted({c for c in customer_ids if c})
        found: dict[str, dict[str, PaymentGate]] = {}
        if not ids:
            return found
        rows = await self._connection.execute(_GATES, {"cids": ids, "stale": now - TOUCH_EVERY})
        for customer_id, capability, status, limit_minor, currency, stale in rows:
            found.setdefault(customer_id, {})[capability] = PaymentGate(
                Status(status), None if limit_minor is None else int(limit_minor), currency, bool(stale)
            )
        return found

    async def touch(
        self, uses: dict[str, set[str]], known: dict[str, dict[str, PaymentGate]], now: dt.datetime
    ) -> None:
        """Record the capabilities each customer just used: a customer seen for the first time
        gets every capability (ACTIVE, known from now); a use older than TOUCH_EVERY is renewed."""
        new_rows, renew = [], []
        for customer_id, used in uses.items():
            states = known.get(customer_id, {})
            for capability in CAPABILITIES:
                state = states.get(capability)
                if state is None:
                    new_rows.append(
                        {
                            "customer_id": customer_id,
                            "capability": capability,
                            "since": now,
                            "last_used_at": now if capability in used else None,
                            "status": Status.ACTIVE.value,
                            "limit_minor": None,
                            "currency": "",
                            "reason": "",
                            "policy_version": "",
                            "changed_at": None,
                            "changed_by": "",
                        }
                    )
                elif capability in used and state.stale:
                    renew.append({"cid": customer_id, "cap": capability, "used": now})
        if new_rows:
            await self._connection.execute(table.insert(), new_rows)
        if renew:
            await self._connection.execute(
                table.update()
                .where(_c.customer_id == sa.bindparam("cid"), _c.capability == sa.bindparam("cap"))
                .values(last_used_at=sa.bindparam("used")),
                renew,
            )

    async def save(self, state: CapabilityState) -> None:
        """Write a changed capability (paused, lowered or restored)."""
        await self._connection.execute(
            table.update()
            .where(_c.customer_id == state.customer_id, _c.capability == state.capability)
            .values(**_values(state))
        )

    async def add_event(self, state: CapabilityState, now: dt.datetime) -> None:
        """The change into the outbox (relayed to the partners by the sweep's lease holder)."""
        await self._connection.execute(
            isolation_events.insert().values(
                customer_id=state.customer_id,
                capability=state.capability,
                status=state.status.value,
                limit_minor=state.limit_minor,
                currency=state.currency,
                reason=state.reason[:128],
                event_time=now,
            )
        )

    async def customers_after(self, after: str, limit: int) -> list[str]:
        """The next customers the bank knows capabilities of, in id order."""
        query = (
            sa.select(_c.customer_id)
            .where(_c.customer_id > after)
            .group_by(_c.customer_id)
            .order_by(_c.customer_id)
            .limit(limit)
        )
        return list((await self._connection.execute(query)).scalars())

    async def peak_days(self, customer_ids: list[str], currency: str, since: dt.date) -> dict[str, int]:
        """Each customer's largest daily sum of payments in ``currency`` from ``since`` (0: none)."""
        d = spent_days.c
        query = (
            sa.select(d.scope_id, sa.func.max(d.amount_minor))
            .where(d.scope == "customer_id", d.scope_id.in_(customer_ids), d.currency == currency, d.day >= since)
            .group_by(d.scope_id)
        )
        return {row[0]: int(row[1] or 0) for row in await self._connection.execute(query)}

    async def events_after(self, seq: int, limit: int) -> list[IsolationEvent]:
        """Outbox rows after ``seq``, in order."""
        e = isolation_events.c
        rows = await self._connection.execute(
            sa.select(isolation_events).where(e.seq > seq).order_by(e.seq).limit(limit)
        )
        return [
            IsolationEvent(
                int(r.seq),
                r.customer_id,
                r.capability,
                r.status,
                None if r.limit_minor is None else int(r.limit_minor),
                r.currency,
                r.reason,
                as_utc(r.event_time) or dt.datetime.now(dt.UTC),
            )
            for r in rows
        ]

    async def consents_of(self, customer_ids: Iterable[str], limit: int = 20) -> dict[str, list[tuple[str, str]]]:
        """Per customer, the (partner, consent) pairs it paid through, most recent first (at most
        ``limit``): who is told. One query for a relay batch's customers."""
        wanted = sorted(set(customer_ids))
        if not wanted:
            return {}
        p = payments.c
        last = sa.func.max(p.created_at)
        pairs = (
            sa.select(
                p.customer_id,
                p.partner_id,
                p.consent_id,
                sa.func.row_number()
                .over(partition_by=p.customer_id, order_by=(last.desc(), p.partner_id, p.consent_id))
                .label("rank"),
            )
            .where(p.customer_id.in_(wanted), p.original_payment_id == "")
            .group_by(p.customer_id, p.partner_id, p.consent_id)
            .subquery()
        )
        query = (
            sa.select(pairs.c.customer_id, pairs.c.partner_id, pairs.c.consent_id)
            .where(pairs.c.rank <= limit)
            .order_by(pairs.c.customer_id, pairs.c.rank)
        )
        found: dict[str, list[tuple[str, str]]] = {customer: [] for customer in wanted}
        for row in await self._connection.execute(query):
            found[row.customer_id].append((row.partner_id, row.consent_id))
        return found
