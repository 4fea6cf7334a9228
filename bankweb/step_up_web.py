"""The step-up pages (Starlette): the payments the bank asked the signed-in customer to
confirm, one page per payment with the amount and payee its code is bound to, and the
confirmation or refusal posted from it. HTTP in, HTML or a redirect within the site out; the
rules are in ``step_up.py``.

GET  /payments/confirm                  what waits for the customer
GET  /payments/confirm/{payment}        one payment: amount, payee, until when; the code form
POST /payments/confirm/{payment}        decision=confirm with the code, or decision=decline

Every form carries the session's CSRF token and is refused when another site sent it; a
customer not signed in recently is sent to sign in and back here.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bankweb.dashboard import ActionRefused, NotSignedIn
from bankweb.flows import AuthorisationFlow, PageError
from bankweb.ports import Session, SessionStore
from bankweb.step_up import NOT_WAITING, PaymentConfirmations
from bankweb.web_base import FORM_EXPIRED, WebBase

_PAYMENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
LIST_PAGE = "/payments/confirm"
# The sign-in page's ``next`` that leads back here (bankweb.dashboard_web.AFTER_SIGN_IN).
SIGN_IN = "/sign-in?next=payments"


class StepUpRoutes(WebBase):
    """The customer's step-up pages."""

    def __init__(
        self,
        flow: AuthorisationFlow,
        confirmations: PaymentConfirmations,
        sessions: SessionStore,
        *,
        secure_cookies: bool,
    ) -> None:
        super().__init__(flow, sessions, secure_cookies=secure_cookies)
        self.confirmations = confirmations

    def routes(self) -> list[Route]:
        """The step-up routes."""
        return [
            Route(LIST_PAGE, self.list_page, methods=["GET"]),
            Route(LIST_PAGE + "/{payment_id}", self.payment_page, methods=["GET"]),
            Route(LIST_PAGE + "/{payment_id}", self.decide, methods=["POST"]),
        ]

    def _signed_in_page(self, template: str, session: Session, status: int = 200, **context: Any) -> Response:
        return self._page(template, status=status, csrf=session.data["csrf"], signed_in=True, **context)

    async def _notice(self, session: Session) -> str:
        notice = str(session.data.pop("notice", ""))
        if notice:
            await self.flow.touch(session)
        return notice

    async def list_page(self, request: Request) -> Response:
        """GET /payments/confirm."""
        session = await self._session(request)
        try:
            page = await self.confirmations.page(session)
        except NotSignedIn:
            return self._see_other(SIGN_IN)
        assert session is not None
        return self._signed_in_page("payments_to_confirm.html", session, page=page, notice=await self._notice(session))

    async def _payment(
        self, session: Session | None, payment_id: str, status: int = 200, message: str = ""
    ) -> Response:
        page, payment = await self.confirmations.one(session, payment_id)
        assert session is not None
        return self._signed_in_page(
            "payment_confirm.html", session, status=status, page=page, payment=payment, message=message
        )

    async def payment_page(self, request: Request) -> Response:
        """GET /payments/confirm/{payment_id}."""
        session = await self._session(request)
        payment_id = request.path_params["payment_id"]
        if not _PAYMENT_ID.match(payment_id):
            return self._error(NOT_WAITING)
        try:
            return await self._payment(session, payment_id)
        except NotSignedIn:
            return self._see_other(SIGN_IN)
        except PageError as error:
            return self._error(error)

    async def decide(self, request: Request) -> Response:
        """POST /payments/confirm/{payment_id}: confirm with the code, or decline."""
        session = await self._session(request)
        form = await request.form()
        if not self._form_ok(request, session, form):
            return self._error(FORM_EXPIRED)
        payment_id = request.path_params["payment_id"]
        decision = str(form.get("decision", ""))
        if not _PAYMENT_ID.match(payment_id) or decision not in ("confirm", "decline"):
            return self._error(NOT_WAITING)
        try:
            if decision == "confirm":
                code = str(form.get("authentication_code", ""))[:16]
                notice = await self.confirmations.confirm(session, payment_id, code)
            else:
                notice = await self.confirmations.decline(session, payment_id)
        except NotSignedIn:
            return self._see_other(SIGN_IN)
        except PageError as error:
            return self._error(error)
        except ActionRefused as refused:
            try:
                return await self._payment(session, payment_id, refused.status, refused.message)
            except PageError:  # it ended (too many wrong codes, expired): back to the list
                notice = refused.message
        assert session is not None
        session.data["notice"] = notice
        await self.flow.touch(session)
        return self._see_other(LIST_PAGE)
