"""The credit pages (Starlette): the offer a wallet asked the bank for, accepted by the
signed-in customer, and the closing of a line (the dashboard's button). HTTP in, HTML or a
redirect within the site out; the rules are in ``credit.py``.

GET  /credit                         back to the offer the customer was looking at (after sign-in)
GET  /credit/offers/{offer}          the offer in plain words; the accept form
POST /credit/offers/{offer}          decision=accept
POST /credit/lines/{line}/close      close a line when nothing is owed

Every form carries the session's CSRF token and is refused when another site sent it; a
customer not signed in recently is sent to sign in and back to the offer.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bankweb.credit import OFFER_NOT_FOUND, CreditOffers
from bankweb.dashboard import ActionRefused, NotSignedIn
from bankweb.flows import AuthorisationFlow, PageError
from bankweb.ports import Session, SessionStore
from bankweb.web_base import FORM_EXPIRED, WebBase

_ID = re.compile(r"^[0-9a-f]{32}$")
# The sign-in page's ``next`` that leads back here (bankweb.dashboard_web.AFTER_SIGN_IN).
SIGN_IN = "/sign-in?next=credit"
OFFER_COOKIE = "credit_offer"


class CreditRoutes(WebBase):
    """The customer's credit pages."""

    def __init__(
        self, flow: AuthorisationFlow, offers: CreditOffers, sessions: SessionStore, *, secure_cookies: bool
    ) -> None:
        super().__init__(flow, sessions, secure_cookies=secure_cookies)
        self.offers = offers

    def routes(self) -> list[Route]:
        """The credit routes."""
        return [
            Route("/credit", self.back_to_offer, methods=["GET"]),
            Route("/credit/offers/{offer_id}", self.offer_page, methods=["GET"]),
            Route("/credit/offers/{offer_id}", self.accept, methods=["POST"]),
            Route("/credit/lines/{line_id}/close", self.close, methods=["POST"]),
        ]

    def _remember(self, offer_id: str) -> Response:
        """Sign in first, then back to this offer: its id in a short-lived cookie of the credit
        pages (signing in starts a new session; the offer page checks ownership anyway)."""
        response = self._see_other(SIGN_IN)
        response.set_cookie(
            OFFER_COOKIE, offer_id, max_age=600, httponly=True, secure=self.secure, samesite="lax", path="/credit"
        )
        return response

    async def back_to_offer(self, request: Request) -> Response:
        """GET /credit: the offer the customer opened before signing in."""
        offer_id = request.cookies.get(OFFER_COOKIE, "")
        return self._see_other(f"/credit/offers/{offer_id}" if _ID.match(offer_id) else "/consents")

    async def _offer(
        self, session: Session, offer_id: str, status: int = 200, message: str = "", notice: str = ""
    ) -> Response:
        offer = await self.offers.offer(session, offer_id)
        return self._page(
            "credit_offer.html",
            status=status,
            csrf=session.data["csrf"],
            signed_in=True,
            offer=offer,
            message=message,
            notice=notice,
        )

    async def offer_page(self, request: Request) -> Response:
        """GET /credit/offers/{offer_id}."""
        session = await self._session(request)
        offer_id = request.path_params["offer_id"]
        if not _ID.match(offer_id):
            return self._error(OFFER_NOT_FOUND)
        try:
            notice = str(session.data.pop("notice", "")) if session is not None else ""
            response = await self._offer(session, offer_id, notice=notice)  # type: ignore[arg-type]
        except NotSignedIn:
            return self._remember(offer_id)
        except PageError as error:
            return self._error(error)
        if notice:
            assert session is not None
            await self.flow.touch(session)
        return response

    async def accept(self, request: Request) -> Response:
        """POST /credit/offers/{offer_id}: decision=accept."""
        session = await self._session(request)
        form = await request.form()
        if not self._form_ok(request, session, form):
            return self._error(FORM_EXPIRED)
        offer_id = request.path_params["offer_id"]
        if not _ID.match(offer_id) or str(form.get("decision", "")) != "accept":
            return self._error(OFFER_NOT_FOUND)
        try:
            notice = await self.offers.accept(session, offer_id)
        except NotSignedIn:
            return self._remember(offer_id)
        except PageError as error:
            return self._error(error)
        except ActionRefused as refused:
            assert session is not None
            return await self._offer(session, offer_id, refused.status, refused.message)
        assert session is not None
        session.data["notice"] = notice
        await self.flow.touch(session)
        return self._see_other(f"/credit/offers/{offer_id}")

    async def close(self, request: Request) -> Response:
        """POST /credit/lines/{line_id}/close, then back to the dashboard with the outcome."""
        session = await self._session(request)
        form = await request.form()
        if not self._form_ok(request, session, form):
            return self._error(FORM_EXPIRED)
        line_id = request.path_params["line_id"]
        if not _ID.match(line_id):
            return self._error(PageError("Credit line not found", "Go back to your accounts.", 404))
        try:
            notice = await self.offers.close(session, line_id)
        except NotSignedIn:
            return self._see_other("/sign-in?next=consents")
        except PageError as error:
            return self._error(error)
        except ActionRefused as refused:
            notice = refused.message
        assert session is not None
        session.data["notice"] = notice
        await self.flow.touch(session)
        return self._see_other("/consents")
