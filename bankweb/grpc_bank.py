"""The bank over gRPC: identity (authorisation requests, strong customer authentication, the
customer's consents), account (the customer's accounts, what wallets read) and payment (what
wallets paid, from its audit trail), with the web app's own service tokens: consents:authorise,
and audit:read for payment's trail only (without it the dashboard shows no payments, nothing
else breaks)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import replace

import grpc

from bankweb.mandate_words import mandate_lines, usage_lines
from bankweb.ports import (
    AccountChoice,
    ApplicationLine,
    ApprovalView,
    AuthorizationView,
    ConsentCard,
    ConsentSummary,
    CreditLineView,
    LimitChange,
    Limits,
    PaymentLine,
    ReadLine,
    RedirectAnswer,
    UsageLine,
)
from meshlib.auth.service_tokens import ServiceTokenSource
from meshlib.clients import PeerCaller
from openbank.account.v1 import customer_account_pb2, customer_account_pb2_grpc
from openbank.common.v1 import audit_pb2, audit_pb2_grpc, consent_permission_pb2, money_pb2
from openbank.credit.v1 import credit_pb2, credit_pb2_grpc
from openbank.identity.v1 import (
    authorization_pb2,
    authorization_pb2_grpc,
    consent_pb2,
    consent_pb2_grpc,
    customer_pb2,
    customer_pb2_grpc,
    decoupled_authorization_pb2,
    onboarding_pb2,
    onboarding_pb2_grpc,
)
from openbank.payment.v1 import mandate_pb2, mandate_pb2_grpc

CALL_DEADLINE_SECONDS = 5.0
SCOPES = ("consents:authorise",)
# Payment's audit trail, filtered by consent: the payments a wallet made with it.
AUDIT_SCOPES = ("audit:read",)
RECENT_PAYMENTS = 20
APPROVE = authorization_pb2.AUTHORIZATION_DECISION_APPROVE
REFUSE = authorization_pb2.AUTHORIZATION_DECISION_REFUSE

# What each permission lets the wallet do, in the customer's words.
PERMISSION_WORDS = {
    consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS: "See the accounts you choose (name and type)",
    consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES: "See their balances",
    consent_permission_pb2.CONSENT_PERMISSION_READ_TRANSACTIONS: "See their transactions",
    consent_permission_pb2.CONSENT_PERMISSION_CONFIRM_FUNDS: "Check whether enough money is available for a payment",
    consent_permission_pb2.CONSENT_PERMISSION_INITIATE_PAYMENTS: "Make payments from them",
    # The bank's credit line: the app asks, the bank decides from its own data, you accept here.
    consent_permission_pb2.CONSENT_PERMISSION_CREDIT: (
        "Ask the bank for a credit line offer on them and follow the line (you accept it at the bank)"
    ),
}
# What a read used, in the customer's words.
READ_WORDS = {
    consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS: "Looked at your accounts",
    consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES: "Checked a balance",
    consent_permission_pb2.CONSENT_PERMISSION_READ_TRANSACTIONS: "Read your transactions",
    consent_permission_pb2.CONSENT_PERMISSION_CONFIRM_FUNDS: "Asked whether funds were available",
}
PAYMENT_STATUS_WORDS = {
    "RECEIVED": "Received",
    "ACCEPTED": "Accepted",
    "SETTLEMENT_IN_PROCESS": "In progress",
    "SETTLED": "Paid",
    "REJECTED": "Refused",
    "CANCELLED": "Cancelled",
    "SCHEDULED": "Scheduled",
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
        mandate=mandate_lines(consent),
        mandate_valid_from=consent.mandate.valid_from_time.ToDatetime(tzinfo=dt.UTC).strftime("%d %B %Y")
        if consent.HasField("mandate")
        else "",
    )


def _limits(consent: consent_pb2.Consent) -> Limits:
    currency = consent.per_payment_limit.currency_code or consent.period_limit.currency_code
    return Limits(
        currency=currency,
        per_payment=consent.per_payment_limit.minor_units if consent.HasField("per_payment_limit") else None,
        period=consent.period_limit.minor_units if consent.HasField("period_limit") else None,
        reads_per_day=consent.reads_per_day,
    )


def consent_card(consent: consent_pb2.Consent, partner_display_name: str) -> ConsentCard:
    """A consent as the dashboard shows it."""
    return ConsentCard(
        consent_id=consent.name.removeprefix("consents/"),
        partner_display_name=partner_display_name or "A partner app",
        state=consent_pb2.ConsentState.Name(consent.state).removeprefix("CONSENT_STATE_"),
        paused=consent.paused,
        summary=consent_summary(consent),
        accounts=tuple(consent.accounts),
        limits=_limits(consent),
        authorised_at=consent.authorise_time.ToDatetime(tzinfo=dt.UTC) if consent.HasField("authorise_time") else None,
    )


def payment_lines(records: list[audit_pb2.AuditRecord]) -> list[PaymentLine]:
    """Payment audit records (newest first) as one line per payment: its amount, latest state, creation time."""
    lines: dict[str, PaymentLine] = {}
    for record in records:
        if not record.payment:
            continue  # a refused request (risk rules, dynamic isolation): no payment was made
        when = record.occur_time.ToDatetime(tzinfo=dt.UTC)
        if record.payment in lines:  # an older record of the same payment
            lines[record.payment] = replace(lines[record.payment], created_at=when)
            continue
        details = json.loads(record.details_json or "{}")
        amount = money_pb2.Money(
            currency_code=str(details.get("currency", "")), minor_units=int(details.get("amount_minor", 0))
        )
        lines[record.payment] = PaymentLine(
            payment=f"payments/{record.payment}",
            amount=money_words(amount),
            status=PAYMENT_STATUS_WORDS.get(record.outcome, record.outcome.replace("_", " ").capitalize()),
            created_at=when,
        )
    return sorted(lines.values(), key=lambda line: line.created_at, reverse=True)[:RECENT_PAYMENTS]


def credit_line_view(line: credit_pb2.CreditLine) -> CreditLineView:
    """A credit line as the dashboard shows it."""
    available = money_pb2.Money(
        currency_code=line.limit.currency_code, minor_units=max(0, line.limit.minor_units - line.owed.minor_units)
    )
    return CreditLineView(
        line_id=line.name.removeprefix("creditLines/"),
        account=line.account,
        state=credit_pb2.CreditLineState.Name(line.state).removeprefix("CREDIT_LINE_STATE_"),
        limit=money_words(line.limit),
        owed=money_words(line.owed),
        available=money_words(available),
        interest_charged=money_words(line.interest_charged),
        repaid=money_words(line.repaid),
        rate=f"{line.apr_bps // 100}.{line.apr_bps % 100:02d} % a year",
        owed_minor_units=line.owed.minor_units,
        opened_at=line.open_time.ToDatetime(tzinfo=dt.UTC) if line.HasField("open_time") else None,
    )


class GrpcBank:
    """Identity, account and payment through their gRPC contracts."""

    def __init__(
        self,
        identity: grpc.aio.Channel,
        account: grpc.aio.Channel,
        tokens: ServiceTokenSource,
        payment: grpc.aio.Channel | None = None,
        audit_tokens: ServiceTokenSource | None = None,
    ) -> None:
        self._authorizations = authorization_pb2_grpc.AuthorizationServiceStub(identity)
        self._customers = customer_pb2_grpc.CustomerServiceStub(identity)
        self._consents = consent_pb2_grpc.ConsentServiceStub(identity)
        self._onboarding = onboarding_pb2_grpc.OnboardingServiceStub(identity)
        self._accounts = customer_account_pb2_grpc.CustomerAccountServiceStub(account)
        self._credit = credit_pb2_grpc.CustomerCreditServiceStub(account)
        self._call = PeerCaller(tokens.token, deadline_seconds=CALL_DEADLINE_SECONDS)
        self._payment_audit = audit_pb2_grpc.AuditServiceStub(payment) if payment is not None else None
        self._mandates = mandate_pb2_grpc.MandateServiceStub(payment) if payment is not None else None
        self._audit_call = (
            PeerCaller(audit_tokens.token, deadline_seconds=CALL_DEADLINE_SECONDS) if audit_tokens else None
        )

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

    # ---- the customer's dashboard ---------------------------------------------------------

    async def customer_consents(self, customer: str) -> list[ConsentCard]:
        """Every consent of the customer, newest first (all pages)."""
        cards: list[ConsentCard] = []
        token = ""
        while True:
            request = consent_pb2.ListCustomerConsentsRequest(customer=customer, page_size=500, page_token=token)
            answer = await self._call(self._consents.ListCustomerConsents, request, "identity.ListCustomerConsents")
            names = answer.partner_display_names
            cards += [consent_card(c, names.get(c.partner, "")) for c in answer.consents]
            token = answer.next_page_token
            if not token or len(cards) >= 2000:
                return cards

    async def customer_applications(self, customer: str) -> list[ApplicationLine]:
        """The account applications wallets made for the customer, newest first (first page)."""
        request = onboarding_pb2.ListCustomerApplicationsRequest(customer=customer, page_size=50)
        answer = await self._call(
            self._onboarding.ListCustomerApplications, request, "identity.ListCustomerApplications"
        )
        names = answer.partner_display_names
        return [
            ApplicationLine(
                application_id=a.name.removeprefix("applications/"),
                partner_display_name=names.get(a.partner, "") or "A partner app",
                state=onboarding_pb2.ApplicationState.Name(a.state).removeprefix("APPLICATION_STATE_"),
                created_at=a.create_time.ToDatetime(tzinfo=dt.UTC),
                account=a.account,
            )
            for a in answer.applications
        ]

    async def customer_credit_lines(self, customer: str) -> list[CreditLineView]:
        """The customer's credit lines, newest first (first page)."""
        request = credit_pb2.ListCustomerCreditLinesRequest(customer=customer, page_size=50)
        answer = await self._call(self._credit.ListCustomerCreditLines, request, "account.ListCustomerCreditLines")
        return [credit_line_view(line) for line in answer.credit_lines]

    async def pause(self, consent_id: str, customer: str) -> None:
        """PauseConsent for the customer."""
        request = consent_pb2.PauseConsentRequest(
            request_id=uuid.uuid4().hex, name=f"consents/{consent_id}", customer=customer
        )
        await self._call(self._consents.PauseConsent, request, "identity.PauseConsent")

    async def resume(self, consent_id: str, customer: str) -> None:
        """ResumeConsent for the customer."""
        request = consent_pb2.ResumeConsentRequest(
            request_id=uuid.uuid4().hex, name=f"consents/{consent_id}", customer=customer
        )
        await self._call(self._consents.ResumeConsent, request, "identity.ResumeConsent")

    async def revoke(self, consent_id: str, customer: str) -> None:
        """CustomerRevokeConsent for the customer."""
        request = consent_pb2.CustomerRevokeConsentRequest(
            request_id=uuid.uuid4().hex, name=f"consents/{consent_id}", customer=customer
        )
        await self._call(self._consents.CustomerRevokeConsent, request, "identity.CustomerRevokeConsent")

    async def lower_limits(self, consent_id: str, customer: str, change: LimitChange) -> None:
        """UpdateConsentLimits with what the customer lowered (identity refuses any widening)."""
        request = consent_pb2.UpdateConsentLimitsRequest(
            request_id=uuid.uuid4().hex, name=f"consents/{consent_id}", customer=customer
        )
        if change.per_payment is not None:
            request.per_payment_limit.CopyFrom(
                money_pb2.Money(currency_code=change.currency, minor_units=change.per_payment)
            )
        if change.period is not None:
            request.period_limit.CopyFrom(money_pb2.Money(currency_code=change.currency, minor_units=change.period))
        if change.reads_per_day is not None:
            request.reads_per_day = change.reads_per_day
        await self._call(self._consents.UpdateConsentLimits, request, "identity.UpdateConsentLimits")

    async def payments_of(self, consent_id: str) -> list[PaymentLine]:
        """The payments made with the consent, from payment's audit trail (newest first)."""
        if self._payment_audit is None or self._audit_call is None:
            return []
        request = audit_pb2.ListAuditRecordsRequest(consent=consent_id, action_prefix="payment.", page_size=200)
        answer = await self._audit_call(self._payment_audit.ListAuditRecords, request, "payment.ListAuditRecords")
        return payment_lines(list(answer.records))

    async def reads_of(self, consent_id: str) -> list[ReadLine]:
        """What the wallet read with the consent over the last week, newest day first."""
        request = customer_account_pb2.GetConsentReadActivityRequest(consent=f"consents/{consent_id}", days=7)
        answer = await self._call(self._accounts.GetConsentReadActivity, request, "account.GetConsentReadActivity")
        return [
            ReadLine(
                day=read.day,
                what=READ_WORDS.get(read.permission, "Read your data"),
                count=read.read_count,
                last_read_at=read.last_read_time.ToDatetime(tzinfo=dt.UTC),
            )
            for read in answer.reads
        ]

    async def mandate_usage(self, consent_id: str, customer: str, valid_from: str) -> list[UsageLine]:
        """What the customer's mandate used in each of its periods (none without the payment service)."""
        if self._mandates is None:
            return []
        request = mandate_pb2.GetCustomerMandateUsageRequest(consent=f"consents/{consent_id}", customer=customer)
        answer = await self._call(self._mandates.GetCustomerMandateUsage, request, "payment.GetCustomerMandateUsage")
        return usage_lines(list(answer.periods), valid_from)

    # ---- the decoupled flow's approvals ---------------------------------------------------

    async def pending_approvals(self, customer: str) -> list[ApprovalView]:
        """The customer's decoupled authorisations awaiting a decision (first page of 100)."""
        request = decoupled_authorization_pb2.ListDecoupledAuthorizationsRequest(customer=customer, page_size=100)
        answer = await self._call(
            self._authorizations.ListDecoupledAuthorizations, request, "identity.ListDecoupledAuthorizations"
        )
        return [
            ApprovalView(
                approval_id=item.name.removeprefix("decoupledAuthorizations/"),
                partner_display_name=item.partner_display_name,
                binding_message=item.binding_message,
                consent=consent_summary(item.consent),
                expire_time=item.expire_time.ToDatetime(tzinfo=dt.UTC),
            )
            for item in answer.decoupled_authorizations
        ]

    async def decide_approval(self, approval_id: str, customer: str, approve: bool, accounts: tuple[str, ...]) -> None:
        """Approve (for ``accounts``) or refuse a decoupled authorisation."""
        decision = (
            decoupled_authorization_pb2.DECOUPLED_DECISION_APPROVE
            if approve
            else decoupled_authorization_pb2.DECOUPLED_DECISION_REFUSE
        )
        request = decoupled_authorization_pb2.DecideDecoupledAuthorizationRequest(
            request_id=uuid.uuid4().hex,
            name=f"decoupledAuthorizations/{approval_id}",
            customer=customer,
            decision=decision,
            accounts=list(accounts),
        )
        await self._call(
            self._authorizations.DecideDecoupledAuthorization, request, "identity.DecideDecoupledAuthorization"
        )
