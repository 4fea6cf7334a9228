"""What the console needs from the mesh, as its use cases see it (gRPC in production, a fake
in unit tests), and what it shows. Amounts stay integer minor units with their currency;
errors from the mesh are ``meshlib.errors.MeshError`` with their stable reasons."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class ParticipantRow:
    """A settlement participant in one currency: where it stands against its net debit cap."""

    participant: str
    name: str
    status: str
    currency: str
    net: int
    reserved: int
    cap: int
    headroom: int

    @property
    def used_percent(self) -> int:
        """How much of the cap the debit position and reservations use (0 without a cap)."""
        if self.cap <= 0:
            return 0
        return max(0, min(999, round(100 * (self.cap - self.headroom) / self.cap)))

    @property
    def over(self) -> bool:
        """Past its cap."""
        return self.headroom < 0


@dataclass(frozen=True)
class WindowRow:
    """A settlement window."""

    name: str
    currency: str
    state: str  # OPEN, CLOSED or SETTLED
    obligation_count: int
    gross: int
    open_time: dt.datetime | None = None
    close_time: dt.datetime | None = None
    settle_time: dt.datetime | None = None

    @property
    def window_id(self) -> str:
        """The id in ``settlementWindows/{id}``."""
        return self.name.removeprefix("settlementWindows/")


@dataclass(frozen=True)
class Reconciliation:
    """A window compared with the ledger: clean, or its differences in words."""

    window: str
    clean: bool
    differences: tuple[str, ...] = ()


@dataclass(frozen=True)
class PaymentRow:
    """A payment as the operators see it."""

    name: str
    partner: str
    state: str
    amount: int
    currency: str
    reason: str
    reason_message: str
    end_to_end_id: str
    create_time: dt.datetime | None = None


@dataclass(frozen=True)
class HeldRow:
    """A payment the risk rules hold for review, with why."""

    name: str
    partner: str
    amount: int
    currency: str
    score: int
    rules: tuple[str, ...]
    rules_version: str
    signals: tuple[tuple[str, str], ...]
    decided: dt.datetime | None
    expires: dt.datetime | None


@dataclass(frozen=True)
class AuditQuery:
    """The audit search's filters (empty: any)."""

    service: str = "all"
    partner: str = ""
    payment: str = ""
    actor: str = ""
    action: str = ""
    since: dt.datetime | None = None
    limit: int = 50


@dataclass(frozen=True)
class AuditRow:
    """One audit record."""

    service: str
    sequence: int
    occur_time: dt.datetime
    action: str
    outcome: str
    resource: str
    actor: str
    actor_kind: str
    details: dict[str, object] = field(default_factory=dict)


class Mesh(Protocol):
    """Identity, payment and settlement (and their audit trails) with the console's credentials."""

    def as_role(self, role: str) -> Mesh:
        """The mesh as an operator of ``role`` acts on it (that role's scopes only)."""
        ...

    async def participants(self) -> list[ParticipantRow]: ...

    async def windows(self, currency: str) -> list[WindowRow]: ...

    async def close_window(self, currency: str, request_id: str) -> tuple[WindowRow, WindowRow]: ...

    async def settle_window(self, name: str, request_id: str, reference: str) -> WindowRow: ...

    async def reconcile_window(self, name: str) -> Reconciliation: ...

    async def update_cap(self, participant: str, currency: str, cap: int, request_id: str) -> None: ...

    async def payments(self, states: tuple[str, ...], partner: str, limit: int) -> list[PaymentRow]: ...

    async def audit(self, query: AuditQuery) -> list[AuditRow]: ...

    async def held_payments(self, limit: int) -> list[HeldRow]: ...
