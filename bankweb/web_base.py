"""What every page of the bank's web apps (customer pages, operator console) shares: templates,
security headers, the session cookie, CSRF and Fetch Metadata checks on forms, errors and redirects within the site.

Security on every response: a server-side session behind an HttpOnly, SameSite=Lax cookie
(Secure and ``__Host-`` prefixed outside the local mesh), a CSRF token in every form (and
cross-site form posts refused outright), a strict Content-Security-Policy, no framing,
no referrer, no caching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from bankweb.flows import AuthorisationFlow, PageError
from bankweb.ports import Session, SessionStore
from bankweb.sessions import csrf_ok, load_session

TEMPLATES = Path(__file__).parent / "templates"
BASE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
FORM_EXPIRED = PageError("This form has expired", "Reload the page and try again.", status=403)


class SecurePages:
    """Plumbing of a site's routes (the customer pages, the operator console): headers, the
    session cookie (named ``cookie``), CSRF and Fetch Metadata checks, templates from
    ``template_dirs`` (first match wins)."""

    def __init__(
        self,
        sessions: SessionStore,
        *,
        secure_cookies: bool,
        cookie: str = "bank_session",
        template_dirs: tuple[Path, ...] = (TEMPLATES,),
    ) -> None:
        self.sessions = sessions
        self.secure = secure_cookies
        self.cookie_name = f"__Host-{cookie}" if secure_cookies else cookie
        self.templates = Environment(
            loader=FileSystemLoader([str(d) for d in template_dirs]),
            autoescape=select_autoescape(default=True),
            auto_reload=False,
        )

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

    def _form_ok(self, request: Request, session: Session | None, form: Any) -> bool:
        """Same-site, with the session's CSRF token."""
        return not self._cross_site(request) and csrf_ok(session, str(form.get("csrf_token", "")))

    def _see_other(self, location: str, csp: str = BASE_CSP) -> Response:
        return self._headers(RedirectResponse(location, status_code=303), csp)


class WebBase(SecurePages):
    """The customer pages' plumbing, bound to their authorisation flow."""

    def __init__(self, flow: AuthorisationFlow, sessions: SessionStore, *, secure_cookies: bool) -> None:
        super().__init__(sessions, secure_cookies=secure_cookies)
        self.flow = flow
