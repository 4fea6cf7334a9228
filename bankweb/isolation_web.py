"""The "Limits and features" page (Starlette): what the bank paused or lowered because the
customer did not use it, each with a button to restore it. HTTP in, HTML or a redirect within
the site out; the rules are in ``isolation.py``.

GET  /limits                          what is paused or lowered, and what is active
POST /limits/{capability}/restore     restore one (a recent sign-in needed)

Every form carries the session's CSRF token and is refused when another site sent it; a
customer not signed in recently is sent to sign in and back here.
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bankweb.dashboard import ActionRefused, NotSignedIn
from bankweb.flows import AuthorisationFlow, PageError
from bankweb.isolation import CustomerLimits
from bankweb.ports import SessionStore
from bankweb.web_base import FORM_EXPIRED, WebBase

_CAPABILITY = re.compile(r"^[A-Z_]{1,32}$")
PAGE = "/limits"
# The sign-in page's ``next`` that leads back here (bankweb.dashboard_web.AFTER_SIGN_IN).
SIGN_IN = "/sign-in?next=limits"


class IsolationRoutes(WebBase):
    """The customer's "Limits and features" page."""

    def __init__(
        self, flow: AuthorisationFlow, limits: CustomerLimits, sessions: SessionStore, *, secure_cookies: bool
    ) -> None:
        super().__init__(flow, sessions, secure_cookies=secure_cookies)
        self.limits = limits

    def routes(self) -> list[Route]:
        """The page's routes."""
        return [
            Route(PAGE, self.page, methods=["GET"]),
            Route(PAGE + "/{capability}/restore", self.restore, methods=["POST"]),
        ]

    async def page(self, request: Request, status: int = 200, message: str = "") -> Response:
        """GET /limits."""
        session = await self._session(request)
        try:
            page = await self.limits.page(session)
        except NotSignedIn:
            return self._see_other(SIGN_IN)
        assert session is not None
        notice = str(session.data.pop("notice", ""))
        if notice:
            await self.flow.touch(session)
        return self._page(
            "limits.html",
            status=status,
            csrf=session.data["csrf"],
            signed_in=True,
            page=page,
            notice=notice,
            message=message,
        )

    async def restore(self, request: Request) -> Response:
        """POST /limits/{capability}/restore."""
        session = await self._session(request)
        form = await request.form()
        if not self._form_ok(request, session, form):
            return self._error(FORM_EXPIRED)
        capability = request.path_params["capability"]
        if not _CAPABILITY.match(capability):
            return self._error(PageError("Not found", "Go back to Limits and features.", 404))
        try:
            notice = await self.limits.restore(session, capability)
        except NotSignedIn:
            return self._see_other(SIGN_IN)
        except ActionRefused as refused:
            return await self.page(request, refused.status, refused.message)
        assert session is not None
        session.data["notice"] = notice
        await self.flow.touch(session)
        return self._see_other(PAGE)
