"""The customer's "Limits and features" on the bank's pages (plain Python, no HTTP): what the
bank paused or lowered because the customer did not use it (dynamic isolation, decided by the
payment service), and restoring it.

Restoring needs a sign-in of the last ``APPROVE_WITHIN`` (password and one-time code, as
approvals and step-up confirmations do): strong customer authentication for each change. The
customer is always the signed-in one; payment audits the restore with them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from bankweb.dashboard import APPROVE_WITHIN, ActionRefused, Dashboard
from bankweb.ports import Session
from meshlib.errors import MeshError

log = logging.getLogger("bankweb.isolation")

# Each capability in the customer's words.
WORDS = {
    "NEW_CREDITOR": "Payments to people and businesses you have not paid before",
    "DAILY_LIMIT": "Your daily payment limit",
    "WALLET_TOP_UP": "Topping up app wallets",
    "TRANSFER": "Transfers",
    "BILL_PAYMENT": "Bill payments",
    "EXTERNAL_TRANSFER": "Payments to other banks",
}


@dataclass(frozen=True)
class Capability:
    """One capability of the customer as the page shows it."""

    capability: str
    status: str  # ACTIVE, PAUSED or LOWERED
    limit: str = ""  # "EUR 500.00" when LOWERED
    reason: str = ""

    @property
    def words(self) -> str:
        """What it is, in the customer's words."""
        return WORDS.get(self.capability, self.capability)

    @property
    def isolated(self) -> bool:
        """Paused or lowered: the customer may restore it."""
        return self.status in ("PAUSED", "LOWERED")


class IsolationBank(Protocol):
    """Payment's CustomerCapabilityService, as the pages use it (the web app's own token)."""

    async def capabilities(self, customer: str) -> list[Capability]: ...

    async def restore(self, customer: str, capability: str) -> Capability: ...


@dataclass(frozen=True)
class LimitsPage:
    """The signed-in customer's capabilities: those paused or lowered first."""

    customer_display: str
    isolated: list[Capability]
    active: list[Capability]


class CustomerLimits:
    """The signed-in customer's paused capabilities and their restore."""

    def __init__(self, dashboard: Dashboard, bank: IsolationBank) -> None:
        self._dashboard = dashboard
        self._bank = bank

    async def page(self, session: Session | None) -> LimitsPage:
        """Everything the bank paused or lowered for the customer (a recent sign-in needed)."""
        customer = self._dashboard.customer(session, within=APPROVE_WITHIN)
        assert session is not None
        capabilities = await self._bank.capabilities(customer)
        return LimitsPage(
            customer_display=session.data.get("username", ""),
            isolated=[c for c in capabilities if c.isolated],
            active=[c for c in capabilities if not c.isolated],
        )

    async def restore(self, session: Session | None, capability: str) -> str:
        """Restore one of the customer's own paused capabilities; the notice to show."""
        customer = self._dashboard.customer(session, within=APPROVE_WITHIN)
        if capability not in WORDS:
            raise ActionRefused("That is not something you can restore here.", status=404)
        try:
            restored = await self._bank.restore(customer, capability)
        except MeshError as error:
            if error.reason in ("CAPABILITY_NOT_ISOLATED", "FIELD_INVALID"):
                raise ActionRefused("That is not paused: nothing to restore.", status=409) from None
            raise
        log.info("capability restored by the customer", extra={"capability": capability})
        return f"Restored: {restored.words}. Your apps can use it again."

    async def notice(self, session: Session | None) -> list[Capability]:
        """For the dashboard: what is paused or lowered (empty when unknown: a courtesy)."""
        customer = self._dashboard.customer(session)
        try:
            return [c for c in await self._bank.capabilities(customer) if c.isolated]
        except MeshError as error:
            log.warning("the customer's capabilities unavailable", extra={"reason": error.reason})
            return []
