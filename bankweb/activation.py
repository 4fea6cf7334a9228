"""The new customer's activation page (an account opened through a wallet): the one-time link
the wallet sent the browser to; the customer enters the code the bank sent to its own contact
(the wallet never has it), chooses a password and is shown its authenticator enrolment once.
Without that code nothing is set and nothing shown; wrong codes are counted by identity and
lock activation (the customer asks the bank for a new code).

GET /activate/{application}?code=..: the code moves into a fresh server-side session and the
browser is sent to the same page without it (no code left in the address bar or history).
POST: identity's ActivateCustomer with the session's code and the typed customer code; the answer, shown once, is never
cached (no-store on every page).
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Protocol

import grpc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bankweb.flows import PageError
from bankweb.ports import SessionStore
from bankweb.sessions import rotate_session
from bankweb.web_base import FORM_EXPIRED, SecurePages
from meshlib.clients import Bearer, PeerCaller
from meshlib.errors import InvalidArgument, MeshError, Unavailable
from openbank.identity.v1 import onboarding_pb2, onboarding_pb2_grpc

log = logging.getLogger("bankweb.activation")
_APPLICATION = re.compile(r"^[0-9a-f]{32}$")
SESSION_SECONDS = 900
LINK_NOT_VALID = PageError(
    "This activation link is not valid",
    "It was used already or it is wrong. Ask the bank for help if you did not activate your access.",
    status=403,
)
ACTIVATION_LOCKED = PageError(
    "Activation is locked",
    "The activation code was entered wrongly too many times, or it has expired. Contact the bank: it "
    "sends a new code to your own e-mail address. Your app cannot do this for you.",
    status=403,
)
_CUSTOMER_CODE_REFUSED = frozenset({"ACTIVATION_LOCKED", "ACTIVATION_CUSTOMER_CODE_EXPIRED"})


@dataclass(frozen=True)
class Activated:
    """What the customer sees once."""

    username: str
    otpauth_uri: str
    totp_secret: str


class Activator(Protocol):
    """Identity's ActivateCustomer."""

    async def activate(self, application_id: str, code: str, customer_code: str, password: str) -> Activated: ...


class GrpcActivator:
    """ActivateCustomer with the web app's service token (consents:authorise)."""

    def __init__(self, identity: grpc.aio.Channel, bearer: Bearer) -> None:
        self._stub = onboarding_pb2_grpc.OnboardingServiceStub(identity)
        self._call = PeerCaller(bearer, deadline_seconds=10.0)

    async def activate(self, application_id: str, code: str, customer_code: str, password: str) -> Activated:
        answer = await self._call(
            self._stub.ActivateCustomer,
            onboarding_pb2.ActivateCustomerRequest(
                request_id=uuid.uuid4().hex,
                application=f"applications/{application_id}",
                activation_code=code,
                customer_code=customer_code,
                password=password,
            ),
            "identity.ActivateCustomer",
        )
        return Activated(answer.username, answer.otpauth_uri, answer.totp_secret)


class ActivationPages(SecurePages):
    """GET and POST /activate/{application}."""

    def __init__(self, activator: Activator, sessions: SessionStore, *, secure_cookies: bool) -> None:
        super().__init__(sessions, secure_cookies=secure_cookies)
        self._activator = activator

    def routes(self) -> list[Route]:
        return [
            Route("/activate/{application}", self.form, methods=["GET"]),
            Route("/activate/{application}", self.activate, methods=["POST"]),
        ]

    async def form(self, request: Request) -> Response:
        application = request.path_params["application"]
        if not _APPLICATION.match(application):
            return self._error(LINK_NOT_VALID)
        code = request.query_params.get("code", "")[:128]
        session = await self._session(request)
        if code:
            fresh = await rotate_session(self.sessions, session, {"activate": [application, code]}, SESSION_SECONDS)
            return self._with_session(self._see_other(f"/activate/{application}"), fresh)
        if session is None or session.data.get("activate", [""])[0] != application:
            return self._error(LINK_NOT_VALID)
        return self._page("activate.html", application=application, csrf=session.data["csrf"], message="")

    async def activate(self, request: Request) -> Response:
        application = request.path_params["application"]
        session = await self._session(request)
        form = await request.form()
        if not self._form_ok(request, session, form):
            return self._error(FORM_EXPIRED)
        assert session is not None
        pending = session.data.get("activate")
        if not pending or pending[0] != application:
            return self._error(LINK_NOT_VALID)
        password = str(form.get("password", ""))[:1024]
        customer_code = re.sub(r"\s+", "", str(form.get("customer_code", ""))[:32])
        if not customer_code:
            return self._page(
                "activate.html",
                status=400,
                application=application,
                csrf=session.data["csrf"],
                message="Enter the activation code the bank sent you.",
            )
        if password != str(form.get("password_again", ""))[:1024]:
            return self._page(
                "activate.html",
                status=400,
                application=application,
                csrf=session.data["csrf"],
                message="The two passwords differ.",
            )
        try:
            activated = await self._activator.activate(application, pending[1], customer_code, password)
        except InvalidArgument:
            return self._page(
                "activate.html",
                status=400,
                application=application,
                csrf=session.data["csrf"],
                message="Choose a password of at least 12 characters.",
            )
        except Unavailable as error:
            # identity did not answer: nothing was decided, the same form may be sent again.
            log.warning("activation not answered", extra={"reason": error.reason})
            return self._page(
                "activate.html",
                status=503,
                application=application,
                csrf=session.data["csrf"],
                message="The bank could not finish this just now. Send it again in a moment.",
            )
        except MeshError as error:
            log.info("activation refused", extra={"reason": error.reason})
            if error.reason == "ACTIVATION_CUSTOMER_CODE_INVALID":
                left = error.metadata.get("attempts_left", "")
                return self._page(
                    "activate.html",
                    status=400,
                    application=application,
                    csrf=session.data["csrf"],
                    message=f"That is not the code the bank sent you. Attempts left: {left}.",
                )
            if error.reason in _CUSTOMER_CODE_REFUSED:
                await self.sessions.delete(session.session_id)
                return self._error(ACTIVATION_LOCKED)
            await self.sessions.delete(session.session_id)
            return self._error(LINK_NOT_VALID)
        await self.sessions.delete(session.session_id)
        return self._page("activated.html", activated=activated)
