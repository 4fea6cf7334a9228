"""The bank over gRPC: identity (authorisation requests, strong customer authentication) and
account (the customer's accounts), with the web app's own service token (consents:authorise)."""

from __future__ import annotations

import datetime as dt
import uuid

import grpc

from bankweb.ports import AccountChoice, AuthorizationView, ConsentSummary, RedirectAnswer
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.clients import PeerCaller
from openbank.account.v1 import customer_account_pb2, customer_account_pb2_grpc
from openbank.common.v1 import consent_permission_pb2, money_pb2
from openbank.identity.v1 import authorization_pb2, authorization_pb2_grpc, consent_pb2, customer_pb2, customer_pb2_grpc

CALL_DEADLINE_SECONDS = 5.0
SCOPES = ("consents:authorise",)
APPROVE = authorization_pb2.AUTHORIZATION_DECISION_APPROVE
REFUSE = authorization_pb2.AUTHORIZATION_DECISION_REFUSE

# What each permission lets the wallet do, in the customer's words.
PERMISSION_WORDS = {
    consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS: "See the accounts you choose (name and type)",
    consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES: "See their balances",
    consent_permission_pb2.CONSENT_PERMISSION_READ_TRANSACTIONS: "See their transactions",
    consent_permission_pb2.CONSENT_PERMISSION_CONFIRM_FUNDS: "Check whether enough money is available for a payment",
    consent_permission_pb2.CONSENT_PERMISSION_INITIATE_PAYMENTS: "Make payments from them",
}
_PERIODS = {
    consent_pb2.CONSENT_PERIOD_DAY: "per day",
    consent_pb2.CONSENT_PERIOD_WEEK: "per week",
    consent_pb2.CONSENT_PERIOD_MONTH: "per month",
}


def money_words(money: money_pb2.Money) -> str:
    """``EUR 100.00`` (two decimals; the mesh's currencies all have two minor digits)."""
    sign = "-" if money.minor_units < 0 else ""
    units = abs(money.minor_units)
    return f"{money.currency_code} {sign}{units // 100:,}.{units % 100:02d}"


def consent_summary(consent: consent_pb2.Consent) -> ConsentSummary:
    """A consent message in plain words."""
    words = []
    for permission in consent.permissions:
        name = consent_permission_pb2.ConsentPermission.Name(permission)
        words.append(
            PERMISSION_WORDS.get(permission, name.removeprefix("CONSENT_PERMISSION_").replace("_", " ").lower())
        )
    period_limit = ""
    if consent.HasField("period_limit"):
        period_limit = f"{money_words(consent.period_limit)} {_PERIODS.get(consent.period, '')}".strip()
    return ConsentSummary(
        name=consent.name,
        permissions=tuple(words),
        expire_time=consent.expire_time.ToDatetime(tzinfo=dt.UTC),
        per_payment_limit=money_words(consent.per_payment_limit) if consent.HasField("per_payment_limit") else "",
        period_limit=period_limit,
        reads_per_day=consent.reads_per_day,
    )


class GrpcBank:
    """Identity and account through their gRPC contracts."""

    def __init__(self, identity: grpc.aio.Channel, account: grpc.aio.Channel, tokens: ServiceTokenSource) -> None:
        self._authorizations = authorization_pb2_grpc.AuthorizationServiceStub(identity)
        self._customers = customer_pb2_grpc.CustomerServiceStub(identity)
        self._accounts = customer_account_pb2_grpc.CustomerAccountServiceStub(account)
        self._call = PeerCaller(tokens.token, deadline_seconds=CALL_DEADLINE_SECONDS)

    async def open_request(self, client_id: str, request_uri: str) -> AuthorizationView:
        """Open (use up) a pushed authorisation request."""
        request = authorization_pb2.OpenAuthorizationRequestRequest(
            request_id=uuid.uuid4().hex, client_id=client_id[:64], request_uri=request_uri[:128]
        )
        answer = await self._call(self._authorizations.OpenAuthorizationRequest, request, "identity.OpenAuthorization")
        opened = answer.authorization_request
        return AuthorizationView(
            name=opened.name,
            client_id=opened.client_id,
            partner_display_name=opened.partner_display_name,
            redirect_uri=opened.redirect_uri,
            consent=consent_summary(opened.consent),
            decide_before=opened.decide_before.ToDatetime(tzinfo=dt.UTC),
        )

    async def authenticate(self, username: str, password: str, one_time_code: str) -> str:
        """Strong customer authentication at identity; the customer's resource name."""
        request = customer_pb2.AuthenticateCustomerRequest(
            request_id=uuid.uuid4().hex, username=username, password=password, one_time_code=one_time_code
        )
        answer = await self._call(self._customers.AuthenticateCustomer, request, "identity.AuthenticateCustomer")
        return answer.customer

    async def customer_accounts(self, customer: str) -> list[AccountChoice]:
        """The customer's open accounts (first page of up to 100)."""
        request = customer_account_pb2.ListCustomerAccountsRequest(customer=customer, page_size=100)
        answer = await self._call(self._accounts.ListCustomerAccounts, request, "account.ListCustomerAccounts")
        return [AccountChoice(a.name, a.display_name, a.display_number, a.currency_code) for a in answer.accounts]

    async def decide(self, name: str, customer: str, approve: bool, accounts: tuple[str, ...]) -> RedirectAnswer:
        """Record the decision; where the browser goes."""
        decision = (
            authorization_pb2.AUTHORIZATION_DECISION_APPROVE
            if approve
            else authorization_pb2.AUTHORIZATION_DECISION_REFUSE
        )
        request = authorization_pb2.DecideAuthorizationRequestRequest(
            request_id=uuid.uuid4().hex, name=name, customer=customer, decision=decision, accounts=list(accounts)
        )
        answer = await self._call(
            self._authorizations.DecideAuthorizationRequest, request, "identity.DecideAuthorization"
        )
        return RedirectAnswer(
            redirect_uri=answer.redirect_uri,
            state=answer.state,
            issuer=answer.issuer,
            code=answer.code,
            error=answer.error,
        )
