"""Risk decisions in the payment database: kept with each payment that waits, resolved once."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from meshlib.storage import as_utc
from services.payment.domain.payments import PaymentState
from services.payment.domain.risk import RiskDecision, RiskOutcome
from services.payment.tables import payments, risk_decisions

_r = risk_decisions.c
_p = payments.c


@dataclass(frozen=True)
class StoredDecision:
    """A payment's risk decision as kept: what was decided and how it ended ("" while waiting)."""

    payment_id: str
    partner_id: str
    decision: RiskDecision
    decided_at: dt.datetime
    expires_at: dt.datetime
    failed_attempts: int
    resolution: str
    resolved_by: str
    resolved_at: dt.datetime | None
    note: str


def _stored(row: Any) -> StoredDecision:
    decision = RiskDecision(
        RiskOutcome[row.outcome],
        int(row.score),
        row.rules_version,
        tuple(r for r in row.rules_fired.split(",") if r),
        dict(json.loads(row.signals)),
    )
    return StoredDecision(
        row.payment_id,
        row.partner_id,
        decision,
        as_utc(row.decided_at),
        as_utc(row.expires_at),
        int(row.failed_attempts),
        row.resolution,
        row.resolved_by,
        as_utc(row.resolved_at) if row.resolved_at is not None else None,
        row.note,
    )


class RiskDecisionRepository:
    """The risk_decisions table, and the guarded moves of a waiting payment."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def add(
        self, payment_id: str, partner_id: str, decision: RiskDecision, now: dt.datetime, expires_at: dt.datetime
    ) -> None:
        """Keep the decision of a payment that waits (until ``expires_at``)."""
        await self._connection.execute(
            risk_decisions.insert(),
            {
                "payment_id": payment_id,
                "partner_id": partner_id,
                "outcome": decision.outcome.name,
                "score": decision.score,
                "rules_version": decision.rules_version[:64],
                "rules_fired": ",".join(decision.fired)[:500],
                "signals": json.dumps(decision.signals, sort_keys=True),
                "decided_at": now,
                "expires_at": expires_at,
                "failed_attempts": 0,
                "resolution": "",
                "resolved_by": "",
                "resolved_at": None,
                "note": "",
            },
        )

    async def get(self, payment_id: str) -> StoredDecision | None:
        """The decision kept for a payment."""
        row = (await self._connection.execute(sa.select(risk_decisions).where(_r.payment_id == payment_id))).first()
        return _stored(row) if row is not None else None

    async def waiting(self, outcome: RiskOutcome, after_id: str, limit: int) -> list[StoredDecision]:
        """Unresolved decisions of one outcome, oldest payment first (keyset after ``after_id``)."""
        query = (
            sa.select(risk_decisions)
            .where(_r.resolution == "", _r.outcome == outcome.name, _r.payment_id > after_id)
            .order_by(_r.payment_id)
            .limit(limit)
        )
        return [_stored(row) for row in await self._connection.execute(query)]

    async def awaiting_customer(self, customer_id: str, after_id: str, limit: int) -> list[StoredDecision]:
        """The customer's payments waiting for their step-up, oldest first (keyset after ``after_id``)."""
        query = (
            sa.select(risk_decisions)
            .join(payments, _p.payment_id == _r.payment_id)
            .where(
                _p.customer_id == customer_id,
                _p.state == PaymentState.AWAITING_AUTHORISATION.name,
                _r.resolution == "",
                _r.outcome == RiskOutcome.STEP_UP.name,
                _r.payment_id > after_id,
            )
            .order_by(_r.payment_id)
            .limit(limit)
        )
        return [_stored(row) for row in await self._connection.execute(query)]

    async def expired(self, now: dt.datetime, limit: int) -> list[StoredDecision]:
        """Unresolved decisions past their time."""
        query = (
            sa.select(risk_decisions)
            .where(_r.resolution == "", _r.expires_at <= now)
            .order_by(_r.expires_at)
            .limit(limit)
        )
        return [_stored(row) for row in await self._connection.execute(query)]

    async def resolve(self, payment_id: str, resolution: str, by: str, now: dt.datetime, note: str = "") -> bool:
        """End the wait once (a guarded update: False when it had ended already)."""
        result = await self._connection.execute(
            risk_decisions.update()
            .where(_r.payment_id == payment_id, _r.resolution == "")
            .values(resolution=resolution, resolved_by=by[:128], resolved_at=now, note=note[:500])
        )
        return bool(result.rowcount)

    async def count_failed_attempt(self, payment_id: str) -> int:
        """One more wrong code; the count so far."""
        await self._connection.execute(
            risk_decisions.update().where(_r.payment_id == payment_id).values(failed_attempts=_r.failed_attempts + 1)
        )
        return int(await self._connection.scalar(sa.select(_r.failed_attempts).where(_r.payment_id == payment_id)))

    async def release(
        self, payment_id: str, from_state: PaymentState, now: dt.datetime, lease_until: dt.datetime
    ) -> bool:
        """A waiting payment goes on: ACCEPTED, its hold about to be asked for, its saga leased to
        the caller (a guarded update: False when it left the state meanwhile)."""
        result = await self._connection.execute(
            payments.update()
            .where(_p.payment_id == payment_id, _p.state == from_state.name)
            .values(
                state=PaymentState.ACCEPTED.name,
                status_reason="",
                status_reason_message="",
                updated_at=now,
                hold_requested=True,
                lease_until=lease_until,
            )
        )
        return bool(result.rowcount)
