"""The customer's credit line on the bank's pages (plain Python, no HTTP): an offer a wallet
asked the bank for, shown in plain words (limit, rate, what a month of using it costs, until
when it may be accepted), accepted by the customer; and the closing of a line when nothing is
owed (the dashboard's button).

Accepting or closing needs a sign-in of the last ``APPROVE_WITHIN`` (password and one-time
code: strong customer authentication, as approvals ask). The offer or line is looked up as
the signed-in customer's own: another customer's is "not found", as a missing one.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Protocol

from bankweb.dashboard import APPROVE_WITHIN, ActionRefused, Dashboard
from bankweb.flows import PageError
from bankweb.ports import Session
from meshlib.errors import MeshError

log = logging.getLogger("bankweb.credit")

OFFER_NOT_FOUND = PageError("Offer not found", "Ask the app for a new credit offer.", 404)
LINE_NOT_FOUND = PageError("Credit line not found", "Go back to your accounts.", 404)

# The account service's refusals, in the customer's words.
_REFUSALS = {
    "CREDIT_OFFER_EXPIRED": "This offer has expired. Ask the app for a new one.",
    "INVALID_STATE_TRANSITION": "This offer or line is already done.",
    "CREDIT_LINE_EXISTS": "This account already has a credit line.",
    "CREDIT_ACCOUNT_NOT_ELIGIBLE": "The bank cannot open a credit line on this account.",
    "CREDIT_LINE_OWED": "Repay what you owe first: the line closes once nothing is owed.",
}


@dataclass(frozen=True)
class OfferView:
    """An offer as the page shows it."""

    offer_id: str
    account: str  # `accounts/{account}`
    state: str  # OFFERED, ACCEPTED, EXPIRED, REFUSED
    limit: str  # "EUR 1,000.00"
    rate: str  # "11.90 % a year"
    month_cost: str  # the interest of 30 days at the full limit
    expire_time: dt.datetime | None
    credit_line: str  # `creditLines/{line}` once accepted


class CreditBank(Protocol):
    """The account service's CustomerCreditService, as the pages use it (the web app's token)."""

    async def credit_offer(self, offer_id: str, customer: str) -> OfferView: ...

    async def accept_credit_offer(self, offer_id: str, customer: str) -> OfferView: ...

    async def close_credit_line(self, line_id: str, customer: str) -> None: ...


def _refused(error: MeshError) -> ActionRefused:
    message = _REFUSALS.get(error.reason)
    if message is None:
        raise error
    return ActionRefused(message)


class CreditOffers:
    """The signed-in customer's offers and lines."""

    def __init__(self, dashboard: Dashboard, bank: CreditBank) -> None:
        self._dashboard = dashboard
        self._bank = bank

    def customer(self, session: Session | None) -> str:
        """The customer, signed in within APPROVE_WITHIN (else SignInAgain / NotSignedIn)."""
        return self._dashboard.customer(session, within=APPROVE_WITHIN)

    async def offer(self, session: Session | None, offer_id: str) -> OfferView:
        """One of the customer's offers."""
        customer = self.customer(session)
        try:
            return await self._bank.credit_offer(offer_id, customer)
        except MeshError as error:
            if error.reason == "RESOURCE_NOT_FOUND":
                raise OFFER_NOT_FOUND from None
            raise

    async def accept(self, session: Session | None, offer_id: str) -> str:
        """The customer accepts: the line opens; the notice to show."""
        customer = self.customer(session)
        await self.offer(session, offer_id)  # the customer's own, or not found
        try:
            accepted = await self._bank.accept_credit_offer(offer_id, customer)
        except MeshError as error:
            raise _refused(error) from None
        log.info("credit offer accepted", extra={"offer": offer_id, "line": accepted.credit_line})
        return f"Done. Your account may now go below zero down to {accepted.limit} at {accepted.rate}."

    async def close(self, session: Session | None, line_id: str) -> str:
        """The customer closes a line; the notice to show."""
        customer = self.customer(session)
        try:
            await self._bank.close_credit_line(line_id, customer)
        except MeshError as error:
            if error.reason == "RESOURCE_NOT_FOUND":
                raise LINE_NOT_FOUND from None
            raise _refused(error) from None
        log.info("credit line closed", extra={"line": line_id})
        return "Your credit line is closed."
