"""The decoupled flow (OpenID Connect CIBA shape, poll mode) for :class:`OpenBankClient`:
start an authorisation for a customer you name, show them the binding message, then poll the
token endpoint until they approve (a consent session), refuse or let it expire.

    started = await client.start_decoupled_authorization(pending, "alice", "Acme top-up 4F2K")
    session = await client.wait_for_decoupled_authorization(started)   # polls every interval
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from openbank.identity.v1 import decoupled_authorization_pb2
from openbank_sdk.auth import ClientCredentials, ConsentTokens
from openbank_sdk.errors import FailedPrecondition, RateLimited

if TYPE_CHECKING:
    from openbank_sdk.client import ConsentSession, Invoker

# CIBA's own errors while the customer decides (stable reasons of the token endpoint).
PENDING = "AUTHORIZATION_PENDING"
SLOW_DOWN = "SLOW_DOWN"
SLOW_DOWN_STEP_SECONDS = 5


@dataclass(frozen=True)
class DecoupledAuthorization:
    """A started decoupled authorisation: what to poll with and how often."""

    consent: str
    auth_req_id: str = field(repr=False)
    expires_in: int
    interval: int
    binding_message: str
    started_at: float = field(default_factory=time.monotonic)


class DecoupledCalls:
    """Mixed into :class:`openbank_sdk.OpenBankClient` (its channel, credentials and stubs)."""

    channel: Any
    credentials: ClientCredentials
    invoker: Invoker
    _authorizations: Any
    _refresh_margin: float

    async def _call(self, method: Any, request: Any, *, mutating: bool = False) -> Any:
        raise NotImplementedError

    def session(self, tokens: ConsentTokens) -> ConsentSession:
        raise NotImplementedError

    async def start_decoupled_authorization(
        self, consent: Any, login_hint: str, binding_message: str, *, request_id: str = ""
    ) -> DecoupledAuthorization:
        """Ask the customer ``login_hint`` (their username at the bank) to authorise ``consent``
        (a :class:`PendingConsent` or ``consents/{id}``) in the bank's app; show them
        ``binding_message`` (1..64 characters) so they recognise the request."""
        name = consent if isinstance(consent, str) else consent.name
        request = decoupled_authorization_pb2.StartDecoupledAuthorizationRequest(
            request_id=request_id, consent=name, login_hint=login_hint, binding_message=binding_message
        )
        answer = await self._call(self._authorizations.StartDecoupledAuthorization, request, mutating=True)
        return DecoupledAuthorization(name, answer.auth_req_id, answer.expires_in, answer.interval, binding_message)

    async def poll_decoupled_authorization(
        self, started: DecoupledAuthorization, scopes: Sequence[str] = ()
    ) -> ConsentSession:
        """One poll: a consent session once the customer approved; else the token endpoint's
        error (``FailedPrecondition`` AUTHORIZATION_PENDING or EXPIRED_TOKEN, ``RateLimited``
        SLOW_DOWN, ``PermissionDenied`` ACCESS_DENIED, or the consent's own reason)."""
        tokens = await ConsentTokens.poll_decoupled(
            self.channel,
            self.credentials,
            started.auth_req_id,
            scopes,
            refresh_margin=self._refresh_margin,
            timeout=self.invoker.timeout,
        )
        return self.session(tokens)

    async def wait_for_decoupled_authorization(
        self,
        started: DecoupledAuthorization,
        scopes: Sequence[str] = (),
        *,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> ConsentSession:
        """Poll at the interval the bank asks (slowing down when told to) until the customer
        decides: the consent session, or the refusal (ACCESS_DENIED, EXPIRED_TOKEN, ...)."""
        interval = float(started.interval)
        while True:
            await sleep(interval)
            try:
                return await self.poll_decoupled_authorization(started, scopes)
            except (FailedPrecondition, RateLimited) as error:
                if error.reason not in (PENDING, SLOW_DOWN):
                    raise
                step = SLOW_DOWN_STEP_SECONDS if error.reason == SLOW_DOWN else 0
                interval = float(error.retry_after) if error.retry_after else interval + step
