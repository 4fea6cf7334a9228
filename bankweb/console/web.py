"""The operator console's pages (Starlette): HTTP in, HTML or a redirect within the site out;
the rules are in ``console.py``, the security every page shares in ``bankweb.web_base``.

Every page needs a signed-in operator (else ``/sign-in``); every form carries the session's
CSRF token and is refused when another site sent it; an action the operator's role does not
allow is a 403 page (and a DENIED record in the console's audit trail).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bankweb.console.chart import window_chart
from bankweb.console.console import ActionFailed, Console, Forbidden, NotSignedIn, SignedIn, SignInFailed
from bankweb.console.ports import AuditQuery
from bankweb.flows import PageError
from bankweb.ports import Session, SessionStore
from bankweb.web_base import FORM_EXPIRED, TEMPLATES, SecurePages

CONSOLE_TEMPLATES = Path(__file__).parent / "templates"
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_WINDOW = re.compile(r"^settlementWindows/[A-Za-z0-9_-]{1,64}$")
_PARTICIPANT = re.compile(r"^participants/[A-Za-z0-9_-]{1,64}$")
_AMOUNT = re.compile(r"^\d{1,13}(\.\d{1,2})?$")
_FILTER = re.compile(r"^[A-Za-z0-9_.:/-]{0,128}$")
AUDIT_SOURCES = ("all", "identity", "account", "payment", "settlement", "console")
FORBIDDEN = PageError("Your role does not allow this", "Ask an operator with the right role.", status=403)
BAD_INPUT = PageError("That request was not understood", "Go back and check what you entered.", status=400)


def money(minor: int, currency: str = "") -> str:
    """``1,234.56 EUR`` from minor units (the mesh's currencies have two minor digits)."""
    sign = "-" if minor < 0 else ""
    units = abs(minor)
    return f"{sign}{units // 100:,}.{units % 100:02d}{' ' + currency if currency else ''}"


def when(moment: dt.datetime | None) -> str:
    """A UTC time to the second, or a dash."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


class ConsoleWeb(SecurePages):
    """The routes."""

    def __init__(self, console: Console, sessions: SessionStore, *, secure_cookies: bool) -> None:
        super().__init__(
            sessions,
            secure_cookies=secure_cookies,
            cookie="console_session",
            template_dirs=(CONSOLE_TEMPLATES, TEMPLATES),
        )
        self.console = console
        self.templates.filters.update(money=money, when=when)

    def _operator_page(self, template: str, session: Session, who: SignedIn, status: int = 200, **ctx: Any) -> Response:
        return self._page(template, status=status, csrf=session.data["csrf"], who=who, **ctx)

    async def _signed_in(self, request: Request) -> tuple[Session, SignedIn] | None:
        session = await self._session(request)
        try:
            who = await self.console.operator(session)
        except NotSignedIn:
            return None
        assert session is not None
        return session, who

    async def _flash(self, session: Session, key: str) -> Any:
        value = session.data.pop(key, None)
        if value is not None:
            await self.console.remember(session)
        return value

    # ---- sign-in -------------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        """GET /."""
        return self._see_other("/partners")

    async def sign_in_page(self, request: Request) -> Response:
        """GET /sign-in."""
        if await self._signed_in(request):
            return self._see_other("/partners")
        old = await self._session(request)
        session = await self.console.new_session(old)
        page = self._page("console_signin.html", csrf=session.data["csrf"], message="")
        return self._with_session(page, session) if session is not old else page

    async def sign_in(self, request: Request) -> Response:
        """POST /sign-in: password + one-time code."""
        session = await self._session(request)
        form = await request.form()
        if not self._form_ok(request, session, form):
            return self._error(FORM_EXPIRED)
        try:
            signed_in = await self.console.sign_in(
                session,
                str(form.get("username", ""))[:64],
                str(form.get("password", ""))[:1024],
                str(form.get("one_time_code", ""))[:16],
                request.client.host if request.client else "unknown",
            )
        except SignInFailed as failed:
            assert session is not None
            return self._page(
                "console_signin.html", status=failed.status, csrf=session.data["csrf"], message=failed.message
            )
        return self._with_session(self._see_other("/partners"), signed_in)

    async def sign_out(self, request: Request) -> Response:
        """POST /sign-out."""
        session = await self._session(request)
        form = await request.form()
        if self._form_ok(request, session, form):
            await self.console.sign_out(session)
        response = self._see_other("/sign-in")
        response.delete_cookie(self.cookie_name, path="/", secure=self.secure, httponly=True, samesite="lax")
        return response

    # ---- pages ---------------------------------------------------------------------------

    async def partners(self, request: Request) -> Response:
        """GET /partners: every participant against its cap."""
        signed = await self._signed_in(request)
        if signed is None:
            return self._see_other("/sign-in")
        session, who = signed
        rows = await self.console.participants()
        return self._operator_page(
            "console_partners.html", session, who, rows=rows, notice=await self._flash(session, "notice")
        )

    async def windows(self, request: Request) -> Response:
        """GET /windows?currency=EUR: the history chart, the windows, their actions."""
        signed = await self._signed_in(request)
        if signed is None:
            return self._see_other("/sign-in")
        session, who = signed
        currency = request.query_params.get("currency", "EUR")
        if not _CURRENCY.match(currency):
            return self._error(BAD_INPUT)
        rows = await self.console.windows(currency)
        return self._operator_page(
            "console_windows.html",
            session,
            who,
            currency=currency,
            rows=rows,
            chart=window_chart(rows, currency),
            notice=await self._flash(session, "notice"),
            reconciliation=await self._flash(session, "reconciliation"),
            message=await self._flash(session, "message"),
        )

    async def payments(self, request: Request) -> Response:
        """GET /payments?partner=: in flight, and rejected with reasons."""
        signed = await self._signed_in(request)
        if signed is None:
            return self._see_other("/sign-in")
        session, who = signed
        partner = request.query_params.get("partner", "")
        if not _FILTER.match(partner):
            return self._error(BAD_INPUT)
        in_flight, rejected = await self.console.payments(partner)
        return self._operator_page(
            "console_payments.html", session, who, partner=partner, in_flight=in_flight, rejected=rejected
        )

    async def audit(self, request: Request) -> Response:
        """GET /audit: search the trails."""
        signed = await self._signed_in(request)
        if signed is None:
            return self._see_other("/sign-in")
        session, who = signed
        query = request.query_params
        fields = {name: query.get(name, "").strip() for name in ("partner", "payment", "actor", "action")}
        service = query.get("service", "all")
        since_text = query.get("since", "").strip()
        if service not in AUDIT_SOURCES or not all(_FILTER.match(v) for v in fields.values()):
            return self._error(BAD_INPUT)
        try:
            since = dt.datetime.fromisoformat(since_text) if since_text else None
        except ValueError:
            return self._error(BAD_INPUT)
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
        searched = "service" in query
        rows = await self.console.audit(AuditQuery(service=service, since=since, **fields)) if searched else []
        return self._operator_page(
            "console_audit.html",
            session,
            who,
            rows=rows,
            searched=searched,
            service=service,
            since=since_text,
            sources=AUDIT_SOURCES,
            **fields,
        )

    async def review(self, request: Request) -> Response:
        """GET /review: the payments the risk rules hold, with their rules and signals."""
        signed = await self._signed_in(request)
        if signed is None:
            return self._see_other("/sign-in")
        session, who = signed
        return self._operator_page("console_review.html", session, who, held=await self.console.held())

    # ---- actions -------------------------------------------------------------------------

    async def _act(self, request: Request, action: Callable[[SignedIn, Any], Awaitable[Any]], back: str) -> Response:
        """A posted action: same-site with the CSRF token, signed in, allowed; then back."""
        session = await self._session(request)
        form = await request.form()
        if not self._form_ok(request, session, form):
            return self._error(FORM_EXPIRED)
        signed = await self._signed_in(request)
        if signed is None:
            return self._see_other("/sign-in")
        session, who = signed
        try:
            outcome = await action(who, form)
        except Forbidden:
            return self._error(FORBIDDEN)
        except PageError as error:
            return self._error(error)
        except ActionFailed as failed:
            outcome = {"message": str(failed)}
        session.data.update(outcome if isinstance(outcome, dict) else {"notice": outcome})
        await self.console.remember(session)
        return self._see_other(back)

    @staticmethod
    def _currency(form: Any) -> str:
        currency = str(form.get("currency", ""))
        if not _CURRENCY.match(currency):
            raise BAD_INPUT
        return currency

    @staticmethod
    def _window(form: Any) -> str:
        window = str(form.get("window", ""))
        if not _WINDOW.match(window):
            raise BAD_INPUT
        return window

    async def close_window(self, request: Request) -> Response:
        """POST /windows/close."""
        form = await request.form()
        currency = str(form.get("currency", "EUR"))
        return await self._act(
            request,
            lambda who, f: self.console.close_window(who, self._currency(f)),
            f"/windows?currency={currency if _CURRENCY.match(currency) else 'EUR'}",
        )

    async def settle_window(self, request: Request) -> Response:
        """POST /windows/settle."""
        form = await request.form()
        currency = str(form.get("currency", "EUR"))
        return await self._act(
            request,
            lambda who, f: self.console.settle_window(who, self._window(f)),
            f"/windows?currency={currency if _CURRENCY.match(currency) else 'EUR'}",
        )

    async def reconcile_window(self, request: Request) -> Response:
        """POST /windows/reconcile."""
        form = await request.form()
        currency = str(form.get("currency", "EUR"))

        async def reconcile(who: SignedIn, f: Any) -> dict[str, Any]:
            report = await self.console.reconcile_window(who, self._window(f))
            return {
                "reconciliation": {"window": report.window, "clean": report.clean, "differences": report.differences}
            }

        return await self._act(
            request, reconcile, f"/windows?currency={currency if _CURRENCY.match(currency) else 'EUR'}"
        )

    async def update_cap(self, request: Request) -> Response:
        """POST /partners/cap (admin): a participant's net debit cap in a currency."""

        async def update(who: SignedIn, f: Any) -> str:
            participant, amount = str(f.get("participant", "")), str(f.get("cap", "")).strip()
            if not _PARTICIPANT.match(participant) or not _AMOUNT.match(amount):
                raise BAD_INPUT
            whole, _, cents = amount.partition(".")
            minor = int(whole) * 100 + int((cents + "00")[:2])
            return await self.console.update_cap(who, participant, self._currency(f), minor)

        return await self._act(request, update, "/partners")

    # ---- plumbing ------------------------------------------------------------------------

    async def stylesheet(self, request: Request) -> Response:
        """GET /static/bank.css and /static/console.css."""
        name = request.path_params["name"]
        if name not in ("bank.css", "console.css"):
            return self._headers(PlainTextResponse("not found", status_code=404))
        folder = CONSOLE_TEMPLATES if name == "console.css" else TEMPLATES
        response = self._headers(PlainTextResponse((folder / name).read_text(), media_type="text/css"))
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    async def health(self, request: Request) -> Response:
        """GET /healthz."""
        return self._headers(PlainTextResponse("ok"))


def build_console_app(web: ConsoleWeb) -> Starlette:
    """The ASGI app."""
    return Starlette(
        routes=[
            Route("/", web.home, methods=["GET"]),
            Route("/sign-in", web.sign_in_page, methods=["GET"]),
            Route("/sign-in", web.sign_in, methods=["POST"]),
            Route("/sign-out", web.sign_out, methods=["POST"]),
            Route("/partners", web.partners, methods=["GET"]),
            Route("/partners/cap", web.update_cap, methods=["POST"]),
            Route("/windows", web.windows, methods=["GET"]),
            Route("/windows/close", web.close_window, methods=["POST"]),
            Route("/windows/settle", web.settle_window, methods=["POST"]),
            Route("/windows/reconcile", web.reconcile_window, methods=["POST"]),
            Route("/payments", web.payments, methods=["GET"]),
            Route("/audit", web.audit, methods=["GET"]),
            Route("/review", web.review, methods=["GET"]),
            Route("/static/{name:str}", web.stylesheet, methods=["GET"]),
            Route("/healthz", web.health, methods=["GET"]),
        ]
    )
