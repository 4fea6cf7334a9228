"""The bank's web pages (Starlette + Jinja2): HTTP in, HTML or a redirect out, nothing else.

Security on every response: a server-side session behind an HttpOnly, SameSite=Lax cookie
(Secure and ``__Host-`` prefixed outside the local mesh), a CSRF token in every form (and
cross-site form posts refused outright), a strict Content-Security-Policy, no framing,
no referrer, no caching. The only redirect to another site is the wallet's registered
redirect URI, as identity answered it; nothing in the query string can choose it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from bankweb.flows import AuthorisationFlow, PageError, SignInRefused
from bankweb.ports import Session, SessionStore
from bankweb.sessions import load_session
from meshlib.errors import MeshError

log = logging.getLogger("bankweb.web")

TEMPLATES = Path(__file__).parent / "templates"
BASE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)


class BankWeb:
    """The routes, bound to one flow and session store."""

    def __init__(self, flow: AuthorisationFlow, sessions: SessionStore, *, secure_cookies: bool) -> None:
        self.flow = flow
        self.sessions = sessions
        self.secure = secure_cookies
        self.cookie_name = "__Host-bank_session" if secure_cookies else "bank_session"
        self.templates = Environment(
            loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True), auto_reload=False
        )

    # ---- plumbing ----------------------------------------------------------------------

    def _headers(self, response: Response, csp: str = BASE_CSP) -> Response:
        response.headers["Content-Security-Policy"] = csp
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
        response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), payment=()"
        if self.secure:
            response.headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
        return response

    def _page(self, template: str, status: int = 200, csp: str = BASE_CSP, **context: Any) -> Response:
        html = self.templates.get_template(template).render(**context)
        return self._headers(HTMLResponse(html, status_code=status), csp)

    def _error(self, error: PageError) -> Response:
        return self._page("error.html", status=error.status, title=error.title, detail=error.detail)

    def _with_session(self, response: Response, session: Session) -> Response:
        response.set_cookie(
            self.cookie_name,
            session.session_id,
            httponly=True,
            secure=self.secure,
            samesite="lax",
            path="/",
        )
        return response

    async def _session(self, request: Request) -> Session | None:
        return await load_session(self.sessions, request.cookies.get(self.cookie_name))

    @staticmethod
    def _cross_site(request: Request) -> bool:
        """A form post another site made the browser send (Fetch Metadata)."""
        return request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none")

    def _see_other(self, location: str, csp: str = BASE_CSP) -> Response:
        return self._headers(RedirectResponse(location, status_code=303), csp)

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
        if self._cross_site(request) or not self.flow.csrf_ok(session, str(form.get("csrf_token", ""))):
            return self._error(PageError("This form has expired", "Reload the page and try again.", status=403))
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
        if self._cross_site(request) or not self.flow.csrf_ok(session, str(form.get("csrf_token", ""))):
            return self._error(PageError("This form has expired", "Reload the page and try again.", status=403))
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
            Route("/static/bank.css", web.stylesheet, methods=["GET"]),
            Route("/healthz", web.health, methods=["GET"]),
        ]
    )
