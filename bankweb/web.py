"""The bank's web pages (Starlette + Jinja2): HTTP in, HTML or a redirect out, nothing else.

The security every page shares is in ``web_base.py``. The only redirect to another site is
the wallet's registered redirect URI, as identity answered it; nothing in the query string
can choose it.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bankweb.activation import ActivationPages
from bankweb.credit_web import CreditRoutes
from bankweb.dashboard import Dashboard
from bankweb.dashboard_web import DashboardRoutes, dashboard_routes
from bankweb.faults import LostDependencyPages
from bankweb.flows import AuthorisationFlow, PageError, SignInRefused
from bankweb.isolation_web import IsolationRoutes
from bankweb.ports import SessionStore
from bankweb.step_up_web import StepUpRoutes
from bankweb.web_base import BASE_CSP, FORM_EXPIRED, TEMPLATES
from meshlib.errors import MeshError

log = logging.getLogger("bankweb.web")


class BankWeb(DashboardRoutes):
    """The routes: the authorisation journey here, the dashboard and approvals in DashboardRoutes."""

    # The credit line offer pages (set by the wiring when the account service serves credit).
    credit: CreditRoutes | None = None

    def __init__(
        self,
        flow: AuthorisationFlow,
        dashboard: Dashboard,
        sessions: SessionStore,
        *,
        secure_cookies: bool,
        activation: ActivationPages | None = None,
        step_up: StepUpRoutes | None = None,
    ) -> None:
        super().__init__(flow, sessions, secure_cookies=secure_cookies)
        self.dashboard = dashboard
        # New customers' one-time activation pages (accounts opened through a wallet).
        self.activation = activation
        # The customer's confirmations of payments the risk rules stepped up.
        self.step_up = step_up
        # The customer's "Limits and features" (dynamic isolation; set by the wiring).
        self.isolation: IsolationRoutes | None = None

    # ---- routes ------------------------------------------------------------------------

    async def authorize(self, request: Request) -> Response:
        """GET /authorize?client_id=..&request_uri=..: the wallet sent the browser here."""
        query = request.query_params
        try:
            session = await self.flow.start(
                await self._session(request), query.get("client_id", ""), query.get("request_uri", "")
            )
        except PageError as error:
            return self._error(error)
        return self._with_session(self._see_other("/authorize/sign-in"), session)

    async def sign_in_form(self, request: Request) -> Response:
        """GET /authorize/sign-in."""
        session = await self._session(request)
        try:
            view = self.flow.pending(session)
        except PageError as error:
            return self._error(error)
        assert session is not None
        return self._page("signin.html", view=view, csrf=session.data["csrf"], message="")

    async def sign_in(self, request: Request) -> Response:
        """POST /authorize/sign-in: password + one-time code."""
        session = await self._session(request)
        form = await request.form()
        if not self._form_ok(request, session, form):
            return self._error(FORM_EXPIRED)
        client = request.client.host if request.client else "unknown"
        try:
            signed_in = await self.flow.sign_in(
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
            view = self.flow.pending(session)
            return self._page(
                "signin.html", status=refused.status, view=view, csrf=session.data["csrf"], message=refused.message
            )
        return self._with_session(self._see_other("/authorize/consent"), signed_in)

    def _consent_csp(self, redirect_uri: str) -> str:
        """The consent form may send the browser on to the wallet's registered redirect URI."""
        parts = urlsplit(redirect_uri)
        return BASE_CSP.replace("form-action 'self'", f"form-action 'self' {parts.scheme}://{parts.netloc}")

    async def consent_form(self, request: Request) -> Response:
        """GET /authorize/consent: the consent in plain words, the accounts to pick."""
        session = await self._session(request)
        try:
            page = await self.flow.consent_page(session)
        except PageError as error:
            return self._error(error)
        assert session is not None
        return self._page(
            "consent.html",
            csp=self._consent_csp(page.view.redirect_uri),
            page=page,
            csrf=session.data["csrf"],
            message="",
        )

    async def decide(self, request: Request) -> Response:
        """POST /authorize/consent: approve (with accounts) or refuse, then back to the wallet."""
        session = await self._session(request)
        form = await request.form()
        if not self._form_ok(request, session, form):
            return self._error(FORM_EXPIRED)
        decision = str(form.get("decision", ""))
        if decision not in ("approve", "refuse"):
            return self._error(PageError("Choose approve or refuse", "Go back and choose.", status=400))
        accounts = tuple(str(a) for a in form.getlist("accounts"))[:50]
        try:
            _, location = await self.flow.decide(session, decision == "approve", accounts)
        except PageError as error:
            return self._error(error)
        except SignInRefused as refused:
            page = await self.flow.consent_page(session)
            assert session is not None
            return self._page(
                "consent.html",
                status=refused.status,
                csp=self._consent_csp(page.view.redirect_uri),
                page=page,
                csrf=session.data["csrf"],
                message=refused.message,
            )
        except MeshError as error:
            log.warning("decision refused by identity", extra={"reason": error.reason})
            return self._error(PageError("This request can no longer be decided", "Start again from the app."))
        return self._see_other(location, csp=self._consent_csp(location))

    async def sign_out(self, request: Request) -> Response:
        """POST /sign-out."""
        session = await self._session(request)
        form = await request.form()
        if self.flow.csrf_ok(session, str(form.get("csrf_token", ""))):
            await self.flow.end(session)
        response = self._page("error.html", title="Signed out", detail="You can close this page.")
        response.delete_cookie(self.cookie_name, path="/", secure=self.secure, httponly=True, samesite="lax")
        return response

    async def stylesheet(self, request: Request) -> Response:
        """GET /static/bank.css."""
        css = (TEMPLATES / "bank.css").read_text()
        response = self._headers(PlainTextResponse(css, media_type="text/css"))
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    async def health(self, request: Request) -> Response:
        """GET /healthz: the process serves."""
        return self._headers(PlainTextResponse("ok"))


def build_app(web: BankWeb) -> Starlette:
    """The ASGI app."""
    return Starlette(
        routes=[
            Route("/authorize", web.authorize, methods=["GET"]),
            Route("/authorize/sign-in", web.sign_in_form, methods=["GET"]),
            Route("/authorize/sign-in", web.sign_in, methods=["POST"]),
            Route("/authorize/consent", web.consent_form, methods=["GET"]),
            Route("/authorize/consent", web.decide, methods=["POST"]),
            Route("/sign-out", web.sign_out, methods=["POST"]),
            *dashboard_routes(web),
            *(web.activation.routes() if web.activation else []),
            *(web.step_up.routes() if web.step_up else []),
            *(web.isolation.routes() if web.isolation else []),
            *(web.credit.routes() if web.credit else []),
            Route("/static/bank.css", web.stylesheet, methods=["GET"]),
            Route("/healthz", web.health, methods=["GET"]),
        ],
        # A lost store or peer: the 503 error page with Retry-After, not a 500 (bankweb.faults).
        middleware=[Middleware(LostDependencyPages, page=lambda *shown: web._error(PageError(*shown)))],
    )
