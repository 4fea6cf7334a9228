"""The bank's kill switch: a payment capability (a payment type) switched off for one partner or
for every partner at once, and back on. CreatePayment refuses a switched-off capability with
FAILED_PRECONDITION CAPABILITY_SWITCHED_OFF (metadata ``capability``, ``scope``) before anything
is recorded or held.

The switches live in payment's database; each replica reads them all (a handful of rows) at
most every ``refresh_seconds``, so a switch takes effect everywhere within that time and a
payment pays no extra read. A failure to read keeps the last snapshot (fail open would let a
switched-off capability through; the snapshot is at most one failed read old).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from meshlib.errors import FailedPrecondition, InvalidArgument
from meshlib.storage import Transactions
from services.payment.tables import capability_switches as table
from services.payment.unit_of_work import PaymentUnitOfWork

CAPABILITIES = ("WALLET_TOP_UP", "TRANSFER", "BILL_PAYMENT", "EXTERNAL_TRANSFER")
ALL_PARTNERS = "*"


@dataclass(frozen=True, slots=True)
class Switch:
    """A capability switched off for a partner (or ``*``: all), since when, by whom."""

    capability: str
    scope: str
    switched_off_at: dt.datetime
    operator: str


def check_capability(off: frozenset[tuple[str, str]], partner_id: str, capability: str) -> None:
    """CAPABILITY_SWITCHED_OFF when ``capability`` is off for all partners or for this one."""
    for scope in (ALL_PARTNERS, partner_id):
        if (capability, scope) in off:
            raise FailedPrecondition(
                f"the bank has switched {capability} off" + (" for every partner" if scope == ALL_PARTNERS else ""),
                reason="CAPABILITY_SWITCHED_OFF",
                metadata={"capability": capability, "scope": "all" if scope == ALL_PARTNERS else "partner"},
            )


class CapabilitySwitches:
    """The switches (SQL) and the replica's cached snapshot of them."""

    def __init__(
        self,
        transactions: Transactions[PaymentUnitOfWork],
        *,
        refresh_seconds: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._transactions = transactions
        self._refresh = refresh_seconds
        self._monotonic = monotonic
        self._off: frozenset[tuple[str, str]] = frozenset()
        self._read_at: float | None = None

    async def check(self, partner_id: str, capability: str) -> None:
        """Refuse a switched-off capability (the snapshot, refreshed when older than allowed)."""
        now = self._monotonic()
        if self._read_at is None or now - self._read_at >= self._refresh:
            switches = await self.list()
            self._off = frozenset((s.capability, s.scope) for s in switches)
            self._read_at = now
        check_capability(self._off, partner_id, capability)

    async def list(self) -> list[Switch]:
        """Every capability switched off, by capability and scope."""

        async def read(uow: PaymentUnitOfWork) -> list[Switch]:
            rows = await uow.connection.execute(sa.select(table).order_by(table.c.capability, table.c.scope))
            return [Switch(r.capability, r.scope, r.switched_off_at, r.operator) for r in rows.all()]

        return await self._transactions.read(read)

    async def switch(self, capability: str, partner_id: str | None, *, on: bool, operator: str) -> list[Switch]:
        """Switch ``capability`` off (or back on) for ``partner_id`` or, None, for all; naturally
        idempotent (switching off what is off changes nothing). The switches after it."""
        if capability not in CAPABILITIES:
            raise InvalidArgument.field("capability", f"must be one of {', '.join(CAPABILITIES)}")
        scope = partner_id or ALL_PARTNERS

        async def change(uow: PaymentUnitOfWork) -> None:
            where = (table.c.capability == capability) & (table.c.scope == scope)
            existing = (await uow.connection.execute(sa.select(table.c.scope).where(where))).first()
            if on and existing is not None:
                await uow.connection.execute(sa.delete(table).where(where))
            elif not on and existing is None:
                await uow.connection.execute(
                    sa.insert(table).values(
                        capability=capability, scope=scope, switched_off_at=dt.datetime.now(dt.UTC), operator=operator
                    )
                )
            else:
                return
            uow.audit.record(
                "payment.capability",
                f"capabilities/{capability}",
                outcome="ON" if on else "OFF",
                details={"scope": scope},
            )

        await self._transactions.run(change)
        self._read_at = None  # this replica sees its own switch at once
        return await self.list()
