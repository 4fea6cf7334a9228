"""An in-memory account ledger for settlement's tests: both ledger ports (reading transfers for
reconciliation, posting a window's settlement chain), idempotent like the real one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from meshlib.errors import AlreadyExists, MeshError, Unavailable
from services.settlement.domain.reconciliation import LedgerTransfer
from services.settlement.domain.settlement_legs import SettlementLeg


@dataclass
class FakeLedger:
    """Transfers in a list; ``post_linked`` adds a chain's legs all at once, or none.

    ``refuse`` makes the next chain fail with that error, moving nothing; ``crash_after_post``
    posts the next chain and then fails as a lost answer would (the money moved, the caller
    never heard).
    """

    transfers: list[LedgerTransfer] = field(default_factory=list)
    chains: dict[str, tuple[SettlementLeg, ...]] = field(default_factory=dict)
    calls: int = 0
    refuse: MeshError | None = None
    crash_after_post: bool = False
    clock: dt.datetime | None = None

    async def transfers_for_payments(self, payment_ids: Sequence[str]) -> dict[str, list[LedgerTransfer]]:
        return {p: [t for t in self.transfers if t.reference == f"payments/{p}"] for p in payment_ids}

    async def transfers_for_account(self, account: str, start: dt.datetime, end: dt.datetime) -> list[LedgerTransfer]:
        return [
            t
            for t in self.transfers
            if account in (t.debit_account, t.credit_account) and t.created_at and start <= t.created_at < end
        ]

    async def transfers_for_reference(self, reference: str) -> list[LedgerTransfer]:
        return [t for t in self.transfers if t.reference == reference]

    async def post_linked(self, request_id: str, legs: Sequence[SettlementLeg]) -> list[str]:
        self.calls += 1
        if self.refuse is not None:
            error, self.refuse = self.refuse, None
            raise error
        names = [f"transfers/{leg.transfer_id}" for leg in legs]
        known = self.chains.get(request_id)
        if known is not None:
            if known != tuple(legs):
                raise AlreadyExists("the chain's request_id was used with other legs", reason="REQUEST_ID_REUSED")
            return names
        self.chains[request_id] = tuple(legs)
        existing = {t.name for t in self.transfers}
        at = self.clock or dt.datetime.now(dt.UTC)
        for leg, name in zip(legs, names, strict=True):
            if name not in existing:
                self.transfers.append(
                    LedgerTransfer(name, leg.debit_account, leg.credit_account, leg.amount, True, leg.reference, at)
                )
        if self.crash_after_post:
            self.crash_after_post = False
            raise Unavailable("the ledger's answer was lost")
        return names

    def legs_of(self, reference: str) -> list[LedgerTransfer]:
        """The posted transfers with this reference."""
        return [t for t in self.transfers if t.reference == reference]
