"""The customer's step-up on the bank's pages (plain Python, no HTTP): the payments the bank's
risk rules asked the signed-in customer to confirm, each shown with the amount and the payee
its one-time code is bound to (PSD2 dynamic linking), confirmed with the code their device
shows for exactly that amount and payee, or declined.

Confirming or declining needs a sign-in of the last ``APPROVE_WITHIN`` (as approvals do); the
code is then the second factor bound to this payment. Payment checks the code against the
payment as it stored it, so a code for another amount or payee confirms nothing, and only
the customer's own payments are listed or reachable (another's is "not found").
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from dataclasses import dataclass
from typing import Protocol

from bankweb.dashboard import APPROVE_WITHIN, ActionRefused, Dashboard
from bankweb.flows import PageError
from bankweb.ports import Bank, Session
from meshlib.errors import MeshError

log = logging.getLogger("bankweb.step_up")

_CODE = re.compile(r"^\d{6}$")
NOT_WAITING = PageError("Payment not found", "It was already confirmed, declined or it expired.", 404)


@dataclass(frozen=True)
class PaymentToConfirm:
    """A payment waiting for the customer's code, in their words: who asks, how much, to whom."""

    payment_id: str
    partner: str  # the resource name, `partners/{partner}`
    consent_id: str
    amount: str  # "EUR 6,000.00": what the code is bound to
    payee: str  # who receives it, as the code is bound to it
    payee_detail: str
    remittance: str
    expire_time: dt.datetime
    attempts_left: int


@dataclass(frozen=True)
class Confirmed:
    """How a confirmed payment ended (its saga ran when the code matched)."""

    payment_id: str
    state: str  # SETTLED, REJECTED, ... (the payment's state name without prefix)
    amount: str
    payee: str


class StepUpBank(Protocol):
    """Payment's PaymentAuthorisationService, as the pages use it (the web app's own token)."""

    async def payments_to_confirm(self, customer: str) -> list[PaymentToConfirm]: ...

    async def confirm_payment(self, payment_id: str, customer: str, code: str) -> Confirmed: ...

    async def decline_payment(self, payment_id: str, customer: str) -> None: ...


@dataclass(frozen=True)
class ConfirmationsPage:
    """What waits for the signed-in customer, with each wallet's name."""

    customer_display: str
    payments: list[PaymentToConfirm]
    # The wallet that asked for each payment, by the consent it paid under.
    partner_names: dict[str, str]

    def partner_of(self, payment: PaymentToConfirm) -> str:
        """The wallet's name (the customer gave it the consent)."""
        return self.partner_names.get(payment.consent_id, "An app you connected")


# Payment's refusals of a code, in the customer's words.
_REFUSALS = {
    "AUTHORISATION_CODE_INVALID": "That code does not match this payment. Check the amount and payee on your device.",
    "AUTHORISATION_FAILED": "Too many wrong codes: the payment was refused and nothing was paid.",
    "AUTHORISATION_EXPIRED": "The time to confirm this payment is over: nothing was paid.",
    "PAYMENT_NOT_AWAITING": "This payment is no longer waiting for you.",
}


class PaymentConfirmations:
    """The signed-in customer's payments to confirm."""

    def __init__(self, dashboard: Dashboard, bank: StepUpBank, consents: Bank) -> None:
        self._dashboard = dashboard
        self._bank = bank
        self._consents = consents

    def _customer(self, session: Session | None) -> str:
        return self._dashboard.customer(session, within=APPROVE_WITHIN)

    async def page(self, session: Session | None) -> ConfirmationsPage:
        """Every payment waiting for the customer (a recent sign-in needed)."""
        customer = self._customer(session)
        assert session is not None
        waiting = await self._bank.payments_to_confirm(customer)
        return ConfirmationsPage(
            customer_display=session.data.get("username", ""),
            payments=waiting,
            partner_names=await self._partner_names(customer) if waiting else {},
        )

    async def _partner_names(self, customer: str) -> dict[str, str]:
        try:
            cards = await self._consents.customer_consents(customer)
        except MeshError as error:  # the names are a courtesy: the payment shows without them
            log.warning("the customer's consents unavailable", extra={"reason": error.reason})
            return {}
        return {card.consent_id: card.partner_display_name for card in cards}

    async def one(self, session: Session | None, payment_id: str) -> tuple[ConfirmationsPage, PaymentToConfirm]:
        """One of the customer's own waiting payments; any other is not found."""
        page = await self.page(session)
        for payment in page.payments:
            if payment.payment_id == payment_id:
                return page, payment
        raise NOT_WAITING

    async def confirm(self, session: Session | None, payment_id: str, code: str) -> str:
        """The code the customer's device shows for this payment: it goes on at once."""
        _, waiting = await self.one(session, payment_id)
        if not _CODE.match(code.strip()):
            raise ActionRefused("Enter the 6 digits your device shows for this payment.", status=400)
        customer = self._customer(session)
        try:
            done = await self._bank.confirm_payment(waiting.payment_id, customer, code.strip())
        except MeshError as error:
            message = _REFUSALS.get(error.reason)
            if message is None:
                raise
            raise ActionRefused(message) from None
        log.info("payment confirmed by the customer", extra={"payment_id": payment_id, "state": done.state})
        if done.state == "SETTLED":
            return f"Confirmed. {done.amount} was paid to {done.payee}."
        if done.state in ("REJECTED", "CANCELLED"):
            return f"Confirmed, but the payment of {done.amount} could not be made; nothing was paid."
        return f"Confirmed. The payment of {done.amount} to {done.payee} is on its way."

    async def decline(self, session: Session | None, payment_id: str) -> str:
        """The customer says no: nothing is paid."""
        _, waiting = await self.one(session, payment_id)
        try:
            await self._bank.decline_payment(waiting.payment_id, self._customer(session))
        except MeshError as error:
            message = _REFUSALS.get(error.reason)
            if message is None:
                raise
            raise ActionRefused(message) from None
        log.info("payment declined by the customer", extra={"payment_id": payment_id})
        return f"Declined. The payment of {waiting.amount} to {waiting.payee} will not be made."
