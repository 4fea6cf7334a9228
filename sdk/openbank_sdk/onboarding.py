"""Account opening for a new customer (OnboardingService): submit the application with your own
verification and the customer's acceptance of the bank's terms, then follow its state.

Mixed into :class:`openbank_sdk.OpenBankClient`: a client-credentials token with
``customers:onboard`` (no consent), asked for on first use. An approved application brings a
consent awaiting the customer (its PKCE pair is in the returned :class:`NewApplication`); once
the account is open, send the customer's browser to ``activation_uri`` (never open it
yourself; the bank sends the customer, not you, the code it asks for), then to the consent's
authorisation as for any consent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from google.protobuf import timestamp_pb2

from openbank.common.v1 import consent_permission_pb2
from openbank.events.v1 import events_pb2
from openbank.identity.v1 import onboarding_pb2, onboarding_pb2_grpc
from openbank_sdk.auth import ClientCredentialsTokens, Pkce, ScopedTokenSources
from openbank_sdk.events import PartnerEvents

WAITING = (onboarding_pb2.APPLICATION_STATE_APPROVED,)
# Where an application stops waiting on the bank: the account is open (or already activated),
# or the bank declined. REFERRED and APPROVED still move by themselves.
DECIDED = (
    onboarding_pb2.APPLICATION_STATE_ACCOUNT_OPEN,
    onboarding_pb2.APPLICATION_STATE_ACTIVE,
    onboarding_pb2.APPLICATION_STATE_DECLINED,
)
READ_PERMISSIONS = (
    consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS,
    consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES,
    consent_permission_pb2.CONSENT_PERMISSION_READ_TRANSACTIONS,
)


@dataclass(frozen=True)
class NewApplication:
    """A submitted application and the PKCE pair of the consent it asks for."""

    application: onboarding_pb2.Application
    pkce: Pkce


def _timestamp(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


class OnboardingCalls(ScopedTokenSources):
    """OnboardingService for :class:`openbank_sdk.OpenBankClient`."""

    invoker: Any

    def _onboarding(self) -> tuple[onboarding_pb2_grpc.OnboardingServiceStub, ClientCredentialsTokens]:
        return onboarding_pb2_grpc.OnboardingServiceStub(self.channel), self._tokens_for("customers:onboard")

    async def submit_application(
        self,
        applicant: onboarding_pb2.Applicant,
        evidence: onboarding_pb2.VerificationEvidence,
        *,
        terms_version: str,
        terms_accepted: dt.datetime,
        currency_code: str = "EUR",
        consent_permissions: Iterable[int] = READ_PERMISSIONS,
        pkce: Pkce | None = None,
        request_id: str = "",
    ) -> NewApplication:
        """Apply for a new customer's account; the answer carries the bank's decision."""
        stub, tokens = self._onboarding()
        pkce = pkce or Pkce.generate()
        request = onboarding_pb2.SubmitApplicationRequest(
            request_id=request_id,
            applicant=applicant,
            evidence=evidence,
            terms=onboarding_pb2.TermsAcceptance(terms_version=terms_version, accept_time=_timestamp(terms_accepted)),
            currency_code=currency_code,
            consent_permissions=list(consent_permissions),
            code_challenge=pkce.challenge,
        )
        answer = await self.invoker.unary(stub.SubmitApplication, request, tokens, mutating=True)
        return NewApplication(answer.application, pkce)

    async def get_application(self, name: str) -> onboarding_pb2.Application:
        """One of your applications (``applications/{id}``) as it is now."""
        stub, tokens = self._onboarding()
        request = onboarding_pb2.GetApplicationRequest(name=name)
        return (await self.invoker.unary(stub.GetApplication, request, tokens)).application

    async def wait_for_account(
        self, name: str, *, timeout: float = 60.0, interval: float = 1.0
    ) -> onboarding_pb2.Application:
        """The application once it left APPROVED (its account is open), or as it is at ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            application = await self.get_application(name)
            if application.state not in WAITING or time.monotonic() >= deadline:
                return application
            await asyncio.sleep(interval)

    async def await_decision(
        self,
        name: str,
        *,
        until: Iterable[int] = DECIDED,
        timeout: float = 600.0,
        recheck: float = 15.0,
        events: PartnerEvents | None = None,
    ) -> onboarding_pb2.Application:
        """The application once it reaches one of ``until`` (by default: the account is open,
        or declined), told by your event log (scope ``events:read``); or as it is at
        ``timeout``. A referred application may wait hours for an operator: keep ``timeout``
        long, or follow your event log yourself and call :meth:`get_application`.

        It reads the application first and again every ``recheck`` seconds, so a change told
        before the stream opened is not missed. Pass ``events`` to reuse your
        :class:`~openbank_sdk.events.PartnerEvents` (its cursor moves past what is read here).
        """
        wanted = frozenset(until)
        names = frozenset(onboarding_pb2.ApplicationState.Name(state) for state in wanted)
        log = events or PartnerEvents(self)  # type: ignore[arg-type]
        deadline = time.monotonic() + timeout

        async def told() -> None:
            async for event in log.stream(types=[events_pb2.EVENT_TYPE_APPLICATION_STATE_CHANGED]):
                if event.resource == name and event.application.state in names:
                    return

        while True:
            application = await self.get_application(name)
            left = deadline - time.monotonic()
            if application.state in wanted or left <= 0:
                return application
            try:
                await asyncio.wait_for(told(), min(recheck, left))
            except TimeoutError:
                pass
