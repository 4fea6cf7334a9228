"""The customer's pages as use cases (plain Python, no HTTP): sign in with password and
one-time code; the consent dashboard (every connected wallet: what each may do, on which
accounts, until when, what it paid and read recently; pause, resume, lower the limits of or
revoke a consent; identity makes each change, it takes effect on the wallet's next call);
the approvals page of the decoupled flow (approve, for the accounts picked, or refuse what a
wallet asked for).

A signed-in session lasts the idle time of every session and at most ``SIGNED_IN_FOR`` in
all; approving needs a sign-in of the last ``APPROVE_WITHIN`` (strong customer
authentication for each authorisation, as the redirect flow asks every time). Every consent
and request is looked up among the signed-in customer's own before anything about it is shown
or changed: another customer's is "not found", as a missing one.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bankweb.flows import AuthorisationFlow, PageError
from bankweb.ports import (
    AccountChoice,
    ApplicationLine,
    ApprovalView,
    Bank,
    ConsentCard,
    CreditLineView,
    LimitChange,
    PaymentLine,
    ReadLine,
    Session,
    UsageLine,
)
from meshlib.errors import MeshError

log = logging.getLogger("bankweb.dashboard")

SIGNED_IN_FOR = dt.timedelta(minutes=30)
APPROVE_WITHIN = dt.timedelta(minutes=5)
_AMOUNT = re.compile(r"^(\d{1,12})(?:\.(\d{1,2}))?$")

# Identity's refusals of a change, in the customer's words.
_REFUSALS = {
    "CONSENT_WIDENING_NOT_ALLOWED": "A limit can only be lowered here. To allow more, connect the app again.",
    "INVALID_STATE_TRANSITION": "That is already done.",
    "CONSENT_EXPIRED": "This connection has already ended.",
    "CONSENT_REVOKED": "This connection has already ended.",
    "CONSENT_NOT_AUTHORISED": "This connection is not active.",
    "FIELD_INVALID": "Check the values: each must be more than zero.",
}


class NotSignedIn(Exception):
    """The page needs a signed-in customer (the browser goes to the sign-in page)."""


class SignInAgain(NotSignedIn):
    """Approving needs a recent sign-in: the customer signs in again, then approves."""


class ActionRefused(Exception):
    """A change the bank refused; ``message`` is safe to show."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Overview:
    """Every connection of the customer: the live ones first, then those that ended."""

    customer_display: str
    active: list[ConsentCard]
    ended: list[ConsentCard]
    accounts: dict[str, AccountChoice]
    # Accounts wallets applied for on the customer's behalf (account opening through a wallet).
    applications: list[ApplicationLine] = field(default_factory=list)
    # The bank's credit lines on the customer's accounts (offered through a wallet).
    credit_lines: list[CreditLineView] = field(default_factory=list)
    products_missing: bool = False


@dataclass(frozen=True)
class ConsentDetail:
    """One connection with what the wallet did recently."""

    customer_display: str
    card: ConsentCard
    accounts: dict[str, AccountChoice]
    payments: list[PaymentLine] = field(default_factory=list)
    reads: list[ReadLine] = field(default_factory=list)
    activity_missing: bool = False
    # A mandate's periodic limits in their current periods: used so far, what is left.
    usage: list[UsageLine] = field(default_factory=list)


@dataclass(frozen=True)
class ApprovalsPage:
    """What wallets asked the customer to approve, and the accounts to pick from."""

    customer_display: str
    approvals: list[ApprovalView]
    accounts: list[AccountChoice]


def parse_amount(text: str, field_name: str) -> int | None:
    """``"12.50"`` -> 1250 minor units; empty -> None (unchanged); anything else is refused."""
    cleaned = text.strip().replace(",", "").replace(" ", "")
    if not cleaned:
        return None
    found = _AMOUNT.match(cleaned)
    if not found:
        raise ActionRefused(f"Write the {field_name} as an amount, for example 25.00.", status=400)
    units, cents = found.group(1), (found.group(2) or "").ljust(2, "0")
    return int(units) * 100 + int(cents)


def parse_count(text: str) -> int | None:
    """A whole number of reads per day; empty -> None (unchanged)."""
    cleaned = text.strip()
    if not cleaned:
        return None
    if not cleaned.isdigit() or len(cleaned) > 9:
        raise ActionRefused("Write the look-ups per day as a whole number, for example 10.", status=400)
    return int(cleaned)


class Dashboard:
    """The signed-in customer's view of their connected wallets."""

    def __init__(self, flow: AuthorisationFlow, bank: Bank) -> None:
        self._flow = flow
        self._bank = bank

    # ---- signing in ----------------------------------------------------------------------

    async def sign_in_session(self, session: Session | None) -> Session:
        """The session the sign-in form posts with (a new one, with its CSRF token, if none)."""
        return session if session is not None else await self._flow.rotate(None, {})

    async def sign_in(
        self, session: Session | None, username: str, password: str, one_time_code: str, client_address: str
    ) -> Session:
        """Password + one-time code; the session gets a new id (nothing from before it is trusted)."""
        if session is None:
            raise PageError("This form has expired", "Reload the page and try again.", status=403)
        customer = await self._flow.authenticate(username, password, one_time_code, client_address)
        return await self._flow.signed_in(Session(session.session_id, {}), customer, username)

    def customer(self, session: Session | None, *, within: dt.timedelta = SIGNED_IN_FOR) -> str:
        """The signed-in customer, or NotSignedIn (none, or signed in too long ago)."""
        if session is None or not session.data.get("customer") or not session.data.get("signed_in_at"):
            raise NotSignedIn
        signed_in_at = dt.datetime.fromisoformat(session.data["signed_in_at"])
        if self._flow.now() - signed_in_at >= min(within, SIGNED_IN_FOR):
            raise SignInAgain if within < SIGNED_IN_FOR else NotSignedIn
        return str(session.data["customer"])

    # ---- reading -------------------------------------------------------------------------

    async def _accounts(self, customer: str) -> dict[str, AccountChoice]:
        return {account.name: account for account in await self._bank.customer_accounts(customer)}

    async def overview(self, session: Session | None) -> Overview:
        """Every consent the customer gave, live ones first."""
        customer = self.customer(session)
        assert session is not None
        cards = [c for c in await self._bank.customer_consents(customer) if c.state != "AWAITING_AUTHORISATION"]
        missing = False
        try:
            applications = await self._bank.customer_applications(customer)
        except MeshError as error:
            # The connections still show; the page says the rest is missing for now.
            log.warning("a customer's applications unavailable", extra={"reason": error.reason})
            applications, missing = [], True
        try:
            credit_lines = await self._bank.customer_credit_lines(customer)
        except MeshError as error:
            log.warning("a customer's credit lines unavailable", extra={"reason": error.reason})
            credit_lines, missing = [], True
        return Overview(
            customer_display=session.data.get("username", ""),
            active=[c for c in cards if c.active],
            ended=[c for c in cards if not c.active],
            accounts=await self._accounts(customer),
            applications=applications,
            credit_lines=credit_lines,
            products_missing=missing,
        )

    async def consent(self, session: Session | None, consent_id: str) -> ConsentCard:
        """One of the signed-in customer's own consents; any other is not found."""
        customer = self.customer(session)
        for card in await self._bank.customer_consents(customer):
            if card.consent_id == consent_id and card.state != "AWAITING_AUTHORISATION":
                return card
        raise PageError("Connection not found", "It may have been removed. Go back to your connected apps.", 404)

    async def detail(self, session: Session | None, consent_id: str) -> ConsentDetail:
        """The consent, the accounts it covers and what the wallet did with it recently."""
        card = await self.consent(session, consent_id)
        assert session is not None
        customer = self.customer(session)
        missing = False
        try:
            payments = await self._bank.payments_of(card.consent_id)
        except MeshError as error:
            log.warning("payments of a consent unavailable", extra={"reason": error.reason})
            payments, missing = [], True
        try:
            reads = await self._bank.reads_of(card.consent_id)
        except MeshError as error:
            log.warning("reads of a consent unavailable", extra={"reason": error.reason})
            reads, missing = [], True
        usage: list[UsageLine] = []
        if card.summary.mandate:
            try:
                usage = await self._bank.mandate_usage(card.consent_id, customer, card.summary.mandate_valid_from)
            except MeshError as error:
                log.warning("a mandate's usage unavailable", extra={"reason": error.reason})
                missing = True
        return ConsentDetail(
            customer_display=session.data.get("username", ""),
            card=card,
            accounts=await self._accounts(customer),
            payments=payments,
            reads=reads,
            activity_missing=missing,
            usage=usage,
        )

    # ---- changing ------------------------------------------------------------------------

    async def _change(
        self, session: Session | None, consent_id: str, change: Callable[[str, str], Awaitable[None]], done: str
    ) -> str:
        card = await self.consent(session, consent_id)
        customer = self.customer(session)
        try:
            await change(card.consent_id, customer)
        except MeshError as error:
            message = _REFUSALS.get(error.reason)
            if message is None:
                raise
            raise ActionRefused(message) from None
        log.info("consent changed by the customer", extra={"consent_id": card.consent_id, "change": done})
        return done.format(partner=card.partner_display_name)

    async def pause(self, session: Session | None, consent_id: str) -> str:
        """Pause: every call of the wallet with this consent is refused until resumed."""
        return await self._change(
            session, consent_id, self._bank.pause, "Paused. {partner} cannot use this connection until you resume it."
        )

    async def resume(self, session: Session | None, consent_id: str) -> str:
        """Lift a pause."""
        return await self._change(session, consent_id, self._bank.resume, "Resumed. {partner} can use it again.")

    async def revoke(self, session: Session | None, consent_id: str) -> str:
        """Stop the consent for good."""
        return await self._change(
            session, consent_id, self._bank.revoke, "Stopped. {partner} can no longer use this connection."
        )

    async def lower_limits(
        self, session: Session | None, consent_id: str, per_payment: str, period: str, reads_per_day: str
    ) -> str:
        """Lower the per-payment or period limit, or the look-ups per day (never raise them)."""
        card = await self.consent(session, consent_id)
        currency = card.limits.currency
        if not currency:
            accounts = await self._accounts(self.customer(session))
            currency = next((accounts[a].currency for a in card.accounts if a in accounts), "")
        change = LimitChange(
            currency=currency,
            per_payment=parse_amount(per_payment, "limit per payment"),
            period=parse_amount(period, "limit in total"),
            reads_per_day=parse_count(reads_per_day),
        )
        if change.empty:
            raise ActionRefused("Nothing to change: enter a lower value first.", status=400)
        if change.period is not None and card.limits.period is None:
            raise ActionRefused("This connection has no total limit to lower.", status=400)

        async def lower(consent: str, customer: str) -> None:
            await self._bank.lower_limits(consent, customer, change)

        return await self._change(session, consent_id, lower, "Limits lowered for {partner}.")

    # ---- the decoupled flow's approvals --------------------------------------------------

    async def approvals(self, session: Session | None) -> ApprovalsPage:
        """What wallets asked the signed-in customer to approve (a recent sign-in needed)."""
        customer = self.customer(session, within=APPROVE_WITHIN)
        assert session is not None
        return ApprovalsPage(
            customer_display=session.data.get("username", ""),
            approvals=await self._bank.pending_approvals(customer),
            accounts=await self._bank.customer_accounts(customer),
        )

    async def decide_approval(
        self, session: Session | None, approval_id: str, approve: bool, accounts: tuple[str, ...]
    ) -> str:
        """Approve (for the customer's own accounts picked) or refuse, with a recent sign-in."""
        customer = self.customer(session, within=APPROVE_WITHIN)
        pending = {a.approval_id: a for a in await self._bank.pending_approvals(customer)}
        approval = pending.get(approval_id)
        if approval is None:
            raise PageError("Request not found", "It was already answered, or it expired.", 404)
        if approve:
            own = {a.name for a in await self._bank.customer_accounts(customer)}
            if not accounts or not set(accounts) <= own:
                raise ActionRefused("Choose at least one of your accounts to share.", status=400)
        try:
            await self._bank.decide_approval(approval_id, customer, approve, accounts if approve else ())
        except MeshError as error:
            if error.reason in ("INVALID_STATE_TRANSITION", "AUTHORIZATION_REQUEST_EXPIRED", "CONSENT_EXPIRED"):
                raise ActionRefused("This request was already answered, or it expired.") from None
            raise
        log.info("decoupled authorisation decided by the customer", extra={"approved": approve})
        name = approval.partner_display_name
        return f"Approved. {name} can now use what you shared." if approve else f"Refused. {name} was told no."
