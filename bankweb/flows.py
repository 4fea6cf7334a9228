"""The authorisation journey as use cases (plain Python, no HTTP): open the pushed request,
sign the customer in (password + one-time code, identity's SCA and lock-out), show the
consent, record the decision and say where the browser goes.

A session's privilege changes twice (request opened, customer signed in): each time the
session gets a new id and the old one is deleted (no session fixation). Every authorisation
asks for strong customer authentication again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bankweb.ports import AccountChoice, AuthorizationView, Bank, Session, SessionStore
from bankweb.sessions import AttemptLimiter, csrf_ok, rotate_session
from meshlib.errors import MeshError

log = logging.getLogger("bankweb.flows")

_SIGNIN_REASONS = {"SCA_FAILED", "CUSTOMER_LOCKED", "FIELD_INVALID"}


class PageError(Exception):
    """A page that cannot go on: shown to the customer, never redirected anywhere."""

    def __init__(self, title: str, detail: str, status: int = 400) -> None:
        super().__init__(title)
        self.title = title
        self.detail = detail
        self.status = status


class SignInRefused(Exception):
    """Sign-in failed; ``message`` is safe to show (never says which credential was wrong)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class ConsentPage:
    """What the consent page shows."""

    view: AuthorizationView
    customer_display: str
    accounts: list[AccountChoice]


class AuthorisationFlow:
    """One customer's journey through the bank's authorisation pages."""

    def __init__(
        self,
        bank: Bank,
        sessions: SessionStore,
        signin_limiter: AttemptLimiter,
        session_ttl_seconds: int,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._bank = bank
        self._sessions = sessions
        self._limiter = signin_limiter
        self._ttl = session_ttl_seconds
        self._clock = clock

    # ---- sessions ----------------------------------------------------------------------

    async def rotate(self, old: Session | None, data: dict[str, Any]) -> Session:
        """A session under a new id (and a new CSRF token), the old one gone."""
        return await rotate_session(self._sessions, old, data, self._ttl)

    async def touch(self, session: Session) -> None:
        """Keep an active session alive for another idle period."""
        await self._sessions.save(session.session_id, session.data, self._ttl)

    async def end(self, session: Session | None) -> None:
        """Sign out: forget the session."""
        if session is not None:
            await self._sessions.delete(session.session_id)

    @staticmethod
    def csrf_ok(session: Session | None, submitted: str) -> bool:
        """The form's token is the session's (constant-time)."""
        return csrf_ok(session, submitted)

    # ---- the journey -------------------------------------------------------------------

    async def start(self, old: Session | None, client_id: str, request_uri: str) -> Session:
        """The browser arrived from the wallet: open (use up) the pushed request."""
        if not client_id or not request_uri:
            raise PageError("This link is not complete", "Go back to the app that sent you here and try again.")
        try:
            view = await self._bank.open_request(client_id, request_uri)
        except MeshError as error:
            if error.reason in {"REQUEST_URI_INVALID", "FIELD_INVALID", "INVALID_STATE_TRANSITION", "CONSENT_EXPIRED"}:
                raise PageError(
                    "This link has expired or was already used",
                    "Nothing was shared. Go back to the app that sent you here and start again.",
                ) from None
            raise
        # Always a fresh session: nothing from before (nor a planted id) carries over.
        return await self.rotate(old, {"auth": view.to_dict()})

    def pending(self, session: Session | None) -> AuthorizationView:
        """The request this session is authorising."""
        if session is None or "auth" not in session.data:
            raise PageError(
                "There is nothing to authorise",
                "Your session ended or this page was opened directly. Start again from the app.",
            )
        view = AuthorizationView.from_dict(session.data["auth"])
        if view.decide_before <= self._clock():
            raise PageError("This request has expired", "Nothing was shared. Start again from the app.")
        return view

    async def sign_in(
        self, session: Session | None, username: str, password: str, one_time_code: str, client_address: str
    ) -> Session:
        """Password + one-time code at identity; a new session id on success."""
        self.pending(session)
        assert session is not None
        customer = await self.authenticate(username, password, one_time_code, client_address)
        return await self.signed_in(session, customer, username)

    async def authenticate(self, username: str, password: str, one_time_code: str, client_address: str) -> str:
        """Password + one-time code at identity (throttled per username and address); the customer."""
        if not self._limiter.allow(client_address, username):
            raise SignInRefused("Too many attempts. Wait a few minutes before trying again.", status=429)
        try:
            customer = await self._bank.authenticate(username, password, one_time_code)
        except MeshError as error:
            if error.reason == "CUSTOMER_LOCKED":
                raise SignInRefused(
                    "Your access is locked after too many failed attempts. Contact the bank.", status=403
                ) from None
            if error.reason in _SIGNIN_REASONS:
                raise SignInRefused("Those details did not match. Check them and try again.") from None
            raise
        log.info("customer signed in", extra={"customer": customer})
        return customer

    async def signed_in(self, session: Session, customer: str, username: str) -> Session:
        """The session after a sign-in: a new id, the customer and when they signed in."""
        data = dict(session.data, customer=customer, username=username, signed_in_at=self._clock().isoformat())
        return await self.rotate(session, data)

    def now(self) -> dt.datetime:
        """The flow's clock."""
        return self._clock()

    async def consent_page(self, session: Session | None) -> ConsentPage:
        """The consent in plain words and the customer's accounts to pick from."""
        view = self.pending(session)
        assert session is not None
        customer = session.data.get("customer")
        if not customer:
            raise PageError("Please sign in first", "Start again from the app.", status=401)
        accounts = await self._bank.customer_accounts(customer)
        return ConsentPage(view, session.data.get("username", ""), accounts)

    async def decide(self, session: Session | None, approve: bool, accounts: tuple[str, ...]) -> tuple[Session, str]:
        """Record the decision; the session forgets the request; the browser goes to the wallet."""
        page = await self.consent_page(session)
        assert session is not None
        offered = {account.name for account in page.accounts}
        if approve and (not accounts or not set(accounts) <= offered):
            raise SignInRefused("Choose at least one of your accounts to share.", status=400)
        answer = await self._bank.decide(page.view.name, session.data["customer"], approve, accounts if approve else ())
        data = {k: v for k, v in session.data.items() if k != "auth"}
        session.data = data
        await self.touch(session)
        log.info("authorisation decided", extra={"approved": approve, "request": page.view.name})
        return session, answer.location()
