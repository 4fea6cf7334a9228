"""The customer's pages (Starlette): sign-in, the consent dashboard and its changes, the
decoupled flow's approvals. HTTP in, HTML or a redirect within the site out; the rules are in
``dashboard.py``.

Every form carries the session's CSRF token and is refused when another site sent it (Fetch
Metadata). A page that needs a signed-in customer sends the browser to ``/sign-in``; where
it goes afterwards is one of a fixed list of this site's pages, never a URL from the request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bankweb.dashboard import APPROVE_WITHIN, SIGNED_IN_FOR, ActionRefused, Dashboard, NotSignedIn
from bankweb.flows import PageError, SignInRefused
from bankweb.isolation import CustomerLimits
from bankweb.ports import Session
from bankweb.web_base import FORM_EXPIRED, WebBase

_CONSENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_APPROVAL_ID = re.compile(r"^[0-9a-f]{32}$")
# Where the browser may go after signing in (the form's ``next``), and nothing else.
AFTER_SIGN_IN = {
    "consents": "/consents",
    "approvals": "/approvals",
    "payments": "/payments/confirm",
    "credit": "/credit",
}
# Pages that act for the customer ask for a recent sign-in (bankweb.dashboard.APPROVE_WITHIN).
RECENT_SIGN_IN = frozenset({"approvals", "payments", "credit"})
# Dynamic isolation's "Limits and features" page (bankweb.isolation_web) acts for the customer too.
AFTER_SIGN_IN["limits"] = "/limits"
RECENT_SIGN_IN = RECENT_SIGN_IN | {"limits"}
NOT_FOUND = PageError("Connection not found", "It may have been removed. Go back to your connected apps.", 404)

Action = Callable[[Session | None, str, Any], Awaitable[str]]


class DashboardRoutes(WebBase):
    """Sign-in and the dashboard; BankWeb adds the authorisation journey."""

    dashboard: Dashboard
    # What dynamic isolation paused, for the dashboard's notice (None: not wired).
    customer_limits: CustomerLimits | None = None

    def _signed_in_page(self, template: str, session: Session, status: int = 200, **context: Any) -> Response:
        """A page for the signed-in customer: the sign-out form needs the CSRF token."""
        return self._page(template, status=status, csrf=session.data["csrf"], signed_in=True, **context)

    def _to_sign_in(self, next_page: str = "consents") -> Response:
        return self._see_other(f"/sign-in?next={next_page}" if next_page in AFTER_SIGN_IN else "/sign-in")

    async def _notice(self, session: Session) -> str:
        """The message of the change just made, shown once."""
        notice = str(session.data.pop("notice", ""))
        if notice:
            await self.flow.touch(session)
        return notice

    # ---- sign-in -------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        """GET /: the customer's connected apps."""
        return self._see_other("/consents")

    async def customer_sign_in_page(self, request: Request) -> Response:
        """GET /sign-in."""
        next_page = request.query_params.get("next", "consents")
        next_page = next_page if next_page in AFTER_SIGN_IN else "consents"
        old = await self._session(request)
        try:
            # Approving asks for a recent sign-in: an older one signs in again here.
            self.dashboard.customer(old, within=APPROVE_WITHIN if next_page in RECENT_SIGN_IN else SIGNED_IN_FOR)
            return self._see_other(AFTER_SIGN_IN[next_page])
        except NotSignedIn:
            pass
        session = await self.dashboard.sign_in_session(old)
        page = self._page("dashboard_signin.html", csrf=session.data["csrf"], next=next_page, message="")
        return self._with_session(page, session) if session is not old else page

    async def customer_sign_in(self, request: Request) -> Response:
        """POST /sign-in: password + one-time code, then the page asked for."""
        session = await self._session(request)
        form = await request.form()
        if not self._form_ok(request, session, form):
            return self._error(FORM_EXPIRED)
        next_page = str(form.get("next", "consents"))
        next_page = next_page if next_page in AFTER_SIGN_IN else "consents"
        client = request.client.host if request.client else "unknown"
        try:
            signed_in = await self.dashboard.sign_in(
                session,
                str(form.get("username", ""))[:64],
                str(form.get("password", ""))[:1024],
                str(form.get("one_time_code", ""))[:16],
                client,
            )
        except PageError as error:
            return self._error(error)
        except SignInRefused as refused:
            assert session is not None
            return self._page(
                "dashboard_signin.html",
                status=refused.status,
                csrf=session.data["csrf"],
                next=next_page,
                message=refused.message,
            )
        return self._with_session(self._see_other(AFTER_SIGN_IN[next_page]), signed_in)

    # ---- the dashboard -------------------------------------------------------------------

    async def consents(self, request: Request) -> Response:
        """GET /consents: every connected app."""
        session = await self._session(request)
        try:
            overview = await self.dashboard.overview(session)
        except NotSignedIn:
            return self._to_sign_in()
        assert session is not None
        paused = await self.customer_limits.notice(session) if self.customer_limits is not None else []
        return self._signed_in_page(
            "consents.html", session, page=overview, notice=await self._notice(session), paused=paused
        )

    async def consent_page(self, request: Request) -> Response:
        """GET /consents/{consent_id}: one connection, what it did, what can be changed."""
        session = await self._session(request)
        consent_id = request.path_params["consent_id"]
        if not _CONSENT_ID.match(consent_id):
            return self._error(NOT_FOUND)
        try:
            detail = await self.dashboard.detail(session, consent_id)
        except NotSignedIn:
            return self._to_sign_in()
        except PageError as error:
            return self._error(error)
        assert session is not None
        return self._signed_in_page(
            "consent_detail.html", session, page=detail, notice=await self._notice(session), message=""
        )

    async def revoke_page(self, request: Request) -> Response:
        """GET /consents/{consent_id}/revoke: are you sure?"""
        session = await self._session(request)
        consent_id = request.path_params["consent_id"]
        if not _CONSENT_ID.match(consent_id):
            return self._error(NOT_FOUND)
        try:
            card = await self.dashboard.consent(session, consent_id)
        except NotSignedIn:
            return self._to_sign_in()
        except PageError as error:
            return self._error(error)
        assert session is not None
        return self._signed_in_page("revoke.html", session, card=card)

    async def _act(self, request: Request, action: Action, done_page: str = "") -> Response:
        """A change posted from the dashboard: checked, made, then back to the consent's page."""
        session = await self._session(request)
        form = await request.form()
        if not self._form_ok(request, session, form):
            return self._error(FORM_EXPIRED)
        consent_id = request.path_params["consent_id"]
        if not _CONSENT_ID.match(consent_id):
            return self._error(NOT_FOUND)
        try:
            notice = await action(session, consent_id, form)
        except NotSignedIn:
            return self._to_sign_in()
        except PageError as error:
            return self._error(error)
        except ActionRefused as refused:
            assert session is not None
            detail = await self.dashboard.detail(session, consent_id)
            return self._signed_in_page(
                "consent_detail.html", session, status=refused.status, page=detail, notice="", message=refused.message
            )
        assert session is not None
        session.data["notice"] = notice
        await self.flow.touch(session)
        return self._see_other(done_page or f"/consents/{consent_id}")

    async def pause(self, request: Request) -> Response:
        """POST /consents/{consent_id}/pause."""
        return await self._act(request, lambda session, consent, _: self.dashboard.pause(session, consent))

    async def resume(self, request: Request) -> Response:
        """POST /consents/{consent_id}/resume."""
        return await self._act(request, lambda session, consent, _: self.dashboard.resume(session, consent))

    async def revoke(self, request: Request) -> Response:
        """POST /consents/{consent_id}/revoke."""
        return await self._act(
            request, lambda session, consent, _: self.dashboard.revoke(session, consent), done_page="/consents"
        )

    async def limits(self, request: Request) -> Response:
        """POST /consents/{consent_id}/limits: lower limits."""

        async def lower(session: Session | None, consent: str, form: Any) -> str:
            return await self.dashboard.lower_limits(
                session,
                consent,
                str(form.get("per_payment_limit", ""))[:32],
                str(form.get("period_limit", ""))[:32],
                str(form.get("reads_per_day", ""))[:16],
            )

        return await self._act(request, lower)

    # ---- the decoupled flow's approvals ---------------------------------------------------

    async def approvals(self, request: Request) -> Response:
        """GET /approvals: what wallets asked the customer to approve."""
        session = await self._session(request)
        try:
            page = await self.dashboard.approvals(session)
        except NotSignedIn:
            return self._to_sign_in("approvals")
        assert session is not None
        return self._signed_in_page(
            "approvals.html", session, page=page, notice=await self._notice(session), message=""
        )

    async def decide_approval(self, request: Request) -> Response:
        """POST /approvals/{approval_id}: approve (with accounts) or refuse."""
        session = await self._session(request)
        form = await request.form()
        if not self._form_ok(request, session, form):
            return self._error(FORM_EXPIRED)
        approval_id = request.path_params["approval_id"]
        decision = str(form.get("decision", ""))
        if not _APPROVAL_ID.match(approval_id) or decision not in ("approve", "refuse"):
            return self._error(PageError("Request not found", "It was already answered, or it expired.", 404))
        accounts = tuple(str(a) for a in form.getlist("accounts"))[:50]
        try:
            notice = await self.dashboard.decide_approval(session, approval_id, decision == "approve", accounts)
        except NotSignedIn:
            return self._to_sign_in("approvals")
        except PageError as error:
            return self._error(error)
        except ActionRefused as refused:
            assert session is not None
            page = await self.dashboard.approvals(session)
            return self._signed_in_page(
                "approvals.html", session, status=refused.status, page=page, notice="", message=refused.message
            )
        assert session is not None
        session.data["notice"] = notice
        await self.flow.touch(session)
        return self._see_other("/approvals")


def dashboard_routes(web: DashboardRoutes) -> list[Route]:
    """The customer's routes."""
    return [
        Route("/", web.home, methods=["GET"]),
        Route("/sign-in", web.customer_sign_in_page, methods=["GET"]),
        Route("/sign-in", web.customer_sign_in, methods=["POST"]),
        Route("/consents", web.consents, methods=["GET"]),
        Route("/consents/{consent_id}", web.consent_page, methods=["GET"]),
        Route("/consents/{consent_id}/pause", web.pause, methods=["POST"]),
        Route("/consents/{consent_id}/resume", web.resume, methods=["POST"]),
        Route("/consents/{consent_id}/limits", web.limits, methods=["POST"]),
        Route("/consents/{consent_id}/revoke", web.revoke_page, methods=["GET"]),
        Route("/consents/{consent_id}/revoke", web.revoke, methods=["POST"]),
        Route("/approvals", web.approvals, methods=["GET"]),
        Route("/approvals/{approval_id}", web.decide_approval, methods=["POST"]),
    ]
