"""The account-opening e2e test's bank: the wallet's and operators' stubs, applications,
activation on the bank's one-time page, the application event log and the operator CLI."""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import grpc
import httpx
from google.protobuf import timestamp_pb2

from meshcli.demo import _pkce
from meshcli.mesh import CUSTOMER_NOTIFICATIONS_FILE, LocalMesh
from meshcli.operator import Operator
from openbank.common.v1 import consent_permission_pb2
from openbank.events.v1 import events_pb2, events_pb2_grpc
from openbank.identity.v1 import (
    onboarding_pb2,
    onboarding_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)
from tests.support.cli import run_cli

ACCOUNT_OPEN = onboarding_pb2.APPLICATION_STATE_ACCOUNT_OPEN


@dataclass
class Bank:
    mesh: LocalMesh
    operator: Operator
    partner: dict[str, Any]
    gateway: grpc.aio.Channel
    wallet_metadata: tuple[tuple[str, str], ...]

    @property
    def onboarding(self) -> onboarding_pb2_grpc.OnboardingServiceStub:
        """The partner's view, through the gateway."""
        return onboarding_pb2_grpc.OnboardingServiceStub(self.gateway)

    @property
    def identity(self) -> onboarding_pb2_grpc.OnboardingServiceStub:
        """Operators and the bank's customer app, on identity."""
        return onboarding_pb2_grpc.OnboardingServiceStub(self.operator.channel("identity"))


def _ts(when: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(when)
    return stamp


READ_ACCOUNTS = consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS
READ_BALANCES = consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES


def application(
    given: str,
    family: str,
    born: str,
    *,
    document: str = "PASSPORT",
    number: str | None = None,
    permissions: tuple[int, ...] = (READ_ACCOUNTS, READ_BALANCES),
) -> tuple[onboarding_pb2.SubmitApplicationRequest, str]:
    """A SubmitApplicationRequest and its consent's PKCE verifier."""
    now = dt.datetime.now(dt.UTC)
    verifier, challenge = _pkce()
    request = onboarding_pb2.SubmitApplicationRequest(
        request_id=uuid.uuid4().hex,
        applicant=onboarding_pb2.Applicant(
            given_name=given, family_name=family, birth_date=born, email="new@example.org", country_code="DE"
        ),
        evidence=onboarding_pb2.VerificationEvidence(
            document_type=document,
            document_number=number or uuid.uuid4().hex[:12].upper(),
            document_expiry_date="2031-05-01",
            method="NFC_CHIP_AND_LIVENESS",
            verify_time=_ts(now - dt.timedelta(hours=1)),
            reference="kyc-1",
        ),
        terms=onboarding_pb2.TermsAcceptance(terms_version="2026-01", accept_time=_ts(now - dt.timedelta(minutes=5))),
        currency_code="EUR",
        consent_permissions=list(permissions),
        code_challenge=challenge,
    )
    return request, verifier


async def account_open(bank: Bank, name: str, timeout: float = 30) -> onboarding_pb2.Application:
    """The application once its account is open (the opening may be finished by the retry job),
    as the wallet sees it: without the customer's data until the customer's consent allows."""
    deadline = time.monotonic() + timeout
    while True:
        found = await wallet_view(bank, name)
        if found.state == ACCOUNT_OPEN or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.3)


async def wallet_view(bank: Bank, name: str) -> onboarding_pb2.Application:
    """GetApplication through the gateway with the wallet's onboarding token."""
    found = await bank.onboarding.GetApplication(
        onboarding_pb2.GetApplicationRequest(name=name), metadata=bank.wallet_metadata, timeout=10
    )
    return found.application


async def bank_view(bank: Bank, name: str) -> onboarding_pb2.Application:
    """The whole application, as the bank's operators see it."""
    found = await bank.identity.ReviewApplication(
        onboarding_pb2.ReviewApplicationRequest(name=name), metadata=await bank.operator.metadata(), timeout=10
    )
    return found.application


def holds_nothing_of_the_customer(app: onboarding_pb2.Application) -> bool:
    """Fair data use: neither the person nor what the bank opened for them."""
    return not (app.HasField("applicant") or app.customer or app.account)


@dataclass
class Activated:
    status: int
    username: str = ""
    otpauth_uri: str = ""
    totp_secret: str = ""


def sent_code(bank: Bank, name: str) -> str:
    """The activation code the bank sent the applicant itself (the local mesh's notification
    file; the wallet never sees it): the latest one for this application."""
    path = bank.mesh.data_dir / CUSTOMER_NOTIFICATIONS_FILE
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    codes = [m["code"] for m in lines if f"applications/{m['application_id']}" == name]
    assert codes, f"no activation code was sent for {name}"
    return str(codes[-1])


async def activate(bank: Bank, app: onboarding_pb2.Application, password: str, code: str | None = None) -> Activated:
    """The customer's browser on the bank's activation page: the link, the form with the code
    the bank sent the customer (``code``: another one), the answer."""
    customer_code = sent_code(bank, app.name) if code is None else code
    async with httpx.AsyncClient(timeout=20, headers={"sec-fetch-site": "same-origin"}) as browser:
        link = await browser.get(app.activation_uri)
        assert link.status_code == 303 and "code=" not in link.headers["location"]
        page = await browser.get(urljoin(app.activation_uri, link.headers["location"]))
        if page.status_code != 200:
            return Activated(page.status_code)
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert csrf is not None
        answer = await browser.post(
            str(page.url),
            data={
                "csrf_token": csrf.group(1),
                "customer_code": customer_code,
                "password": password,
                "password_again": password,
            },
        )
    if answer.status_code != 200:
        return Activated(answer.status_code)
    found = {
        key: html.unescape(m.group(1))
        for key in ("username", "otpauth-uri", "totp-secret")
        if (m := re.search(rf'id="{key}">([^<]+)<', answer.text))
    }
    return Activated(200, found["username"], found["otpauth-uri"], found["totp-secret"])


async def application_states(bank: Bank, name: str) -> list[str]:
    """The states the wallet's event log told for one application, in order."""
    token = await token_pb2_grpc.TokenServiceStub(bank.gateway).IssueToken(
        token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
            client_id=bank.partner["client_id"],
            client_secret=bank.partner["client_secret"],
            scopes=["events:read"],
        ),
        timeout=10,
    )
    page = await events_pb2_grpc.EventServiceStub(bank.gateway).PollEvents(
        events_pb2.PollEventsRequest(
            request_id=uuid.uuid4().hex,
            after_cursor="0",
            max_events=100,
            types=[events_pb2.EVENT_TYPE_APPLICATION_STATE_CHANGED],
        ),
        metadata=(("authorization", f"Bearer {token.access_token}"),),
        timeout=10,
    )
    return [e.application.state for e in page.events if e.resource == name]


async def cli(bank: Bank, *args: str) -> tuple[int, str]:
    """``openbank-mesh application ...`` against the mesh, JSON lines out."""
    return await run_cli(bank.mesh.data_dir, "application", *args, "--json")
