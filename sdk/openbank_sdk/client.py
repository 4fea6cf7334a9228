"""The partner client: every public rpc of the mesh, with tokens, idempotency keys, retries
on UNAVAILABLE, typed errors, pagination and a resumable payment stream.

    async with OpenBankClient.connect("127.0.0.1:8443", client_id, client_secret, insecure=True) as bank:
        pending = await bank.create_consent([READ_ACCOUNTS, READ_BALANCES, INITIATE_PAYMENTS])
        # ... the customer authorises pending.consent.name in the bank's app -> code ...
        session = await bank.exchange_code(code, pending.pkce.verifier)
        async for account in session.accounts():
            print(account.name, (await session.balance(account.name)).available.minor_units)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import grpc
from google.protobuf import timestamp_pb2

from openbank.account.v1 import account_pb2, account_pb2_grpc
from openbank.common.v1 import consent_permission_pb2, money_pb2
from openbank.credit.v1 import credit_pb2_grpc
from openbank.identity.v1 import (
    authorization_pb2,
    authorization_pb2_grpc,
    consent_pb2,
    consent_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)
from openbank.payment.v1 import mandate_pb2_grpc, payment_pb2, payment_pb2_grpc
from openbank.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from openbank_sdk.auth import ClientCredentials, ClientCredentialsTokens, ConsentTokens, Pkce, TokenSource
from openbank_sdk.channels import open_channel
from openbank_sdk.credit import CreditCalls
from openbank_sdk.decoupled import DecoupledCalls
from openbank_sdk.disputes import DisputeCalls
from openbank_sdk.errors import OpenBankError, from_rpc_error
from openbank_sdk.mandates import MandateCalls
from openbank_sdk.onboarding import OnboardingCalls
from openbank_sdk.pagination import paginate
from openbank_sdk.retry import DEFAULT_RETRY, RetryPolicy, call_with_retry
from openbank_sdk.scheduling import StandingOrderCalls

INTERACTION_ID_HEADER = "x-fapi-interaction-id"
CUSTOMER_IP_HEADER = "x-fapi-customer-ip-address"

# Scopes of a partner-wide (client-credentials) token: everything not bound to a consent.
PARTNER_WIDE_SCOPES: tuple[str, ...] = ("consents:read", "consents:write", "payments:read", "settlement:read")

READ_ACCOUNTS = consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS
READ_BALANCES = consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES
READ_TRANSACTIONS = consent_permission_pb2.CONSENT_PERMISSION_READ_TRANSACTIONS
CONFIRM_FUNDS = consent_permission_pb2.CONSENT_PERMISSION_CONFIRM_FUNDS
INITIATE_PAYMENTS = consent_permission_pb2.CONSENT_PERMISSION_INITIATE_PAYMENTS
SCHEDULE_PAYMENTS = consent_permission_pb2.CONSENT_PERMISSION_SCHEDULE_PAYMENTS
ALL_PERMISSIONS = (
    READ_ACCOUNTS,
    READ_BALANCES,
    READ_TRANSACTIONS,
    CONFIRM_FUNDS,
    INITIATE_PAYMENTS,
    SCHEDULE_PAYMENTS,
)

# Reasons after which a fresh token may succeed where the old one failed.
_RENEWABLE_TOKEN_REASONS = frozenset({"TOKEN_EXPIRED"})


def new_request_id() -> str:
    """A fresh idempotency key (AIP-155): 1..64 characters of [A-Za-z0-9._:-]."""
    return f"sdk-{uuid.uuid4().hex}"


def money(minor_units: int, currency_code: str) -> money_pb2.Money:
    """An exact amount: ``money(1250, "EUR")`` is 12.50 EUR. Never a float."""
    if not isinstance(minor_units, int):
        raise TypeError("minor_units must be an int (money is never a float)")
    return money_pb2.Money(currency_code=currency_code, minor_units=minor_units)


def timestamp(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    """A protobuf Timestamp from an aware datetime."""
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment.astimezone(dt.UTC))
    return stamp


@dataclass(frozen=True)
class PendingConsent:
    """A consent awaiting the customer's authorisation, with the PKCE pair that completes it.

    Send the customer to the bank with ``consent.name``; keep ``pkce.verifier`` for
    :meth:`OpenBankClient.exchange_code`.
    """

    consent: consent_pb2.Consent
    pkce: Pkce

    @property
    def name(self) -> str:
        """The consent's resource name, ``consents/{consent}``."""
        return self.consent.name


@dataclass(frozen=True)
class PushedAuthorization:
    """A pushed authorisation request (RFC 9126): send the customer's browser to ``url(bank)``.

    When the browser comes back to the redirect URI, check ``state`` and ``iss`` before
    exchanging the code (:meth:`OpenBankClient.exchange_code` with the consent's verifier).
    """

    request_uri: str
    expires_in: int
    state: str
    client_id: str

    def url(self, bank_web: str) -> str:
        """The bank's authorisation page for this request, e.g. ``url("https://bank.example")``."""
        query = urlencode({"client_id": self.client_id, "request_uri": self.request_uri})
        return f"{bank_web.rstrip('/')}/authorize?{query}"


class Invoker:
    """Sends one rpc: token metadata, idempotency key, retries on UNAVAILABLE, typed errors.

    ``last_headers`` holds the initial metadata of the last unary answer (``ratelimit-*``,
    ``x-fapi-interaction-id``).
    """

    def __init__(
        self,
        *,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = 10.0,
        customer_ip_address: str | None = None,
    ) -> None:
        self.retry = retry
        self.timeout = timeout
        self.customer_ip_address = customer_ip_address
        self.last_headers: dict[str, str] = {}

    async def metadata(self, tokens: TokenSource | None, interaction_id: str) -> tuple[tuple[str, str], ...]:
        """Call metadata: bearer token, interaction id and (when set) the customer's IP."""
        pairs = [(INTERACTION_ID_HEADER, interaction_id)]
        if tokens is not None:
            pairs.extend(await tokens.metadata())
        if self.customer_ip_address:
            # FAPI: the customer is present; the gateway does not count the read against the
            # consent's daily allowance of unattended reads.
            pairs.append((CUSTOMER_IP_HEADER, self.customer_ip_address))
        return tuple(pairs)

    async def unary(self, method: Any, request: Any, tokens: TokenSource | None, *, mutating: bool = False) -> Any:
        """Call ``method`` (a stub's unary method) with ``request``.

        For a mutating rpc an empty ``request_id`` is filled with a fresh key once, before the
        first attempt, so every retry carries the same key and the mesh answers a replay with
        the first answer. A TOKEN_EXPIRED answer renews the token and tries once more.
        """
        if mutating and not request.request_id:
            request.request_id = new_request_id()
        interaction_id = str(uuid.uuid4())
        renewed = False

        async def attempt() -> Any:
            nonlocal renewed
            call = method(request, metadata=await self.metadata(tokens, interaction_id), timeout=self.timeout)
            try:
                response = await call
            except grpc.aio.AioRpcError as error:
                decoded = from_rpc_error(error)
                if tokens is not None and decoded.reason in _RENEWABLE_TOKEN_REASONS and not renewed:
                    renewed = True
                    await tokens.refresh()
                    return await attempt()
                raise decoded from None
            self.last_headers = {k: v for k, v in (await call.initial_metadata() or ()) if isinstance(v, str)}
            return response

        return await call_with_retry(attempt, self.retry)


class ConsentSession(StandingOrderCalls, MandateCalls, CreditCalls):
    """Calls bound to one authorised consent: accounts, balances, transactions, funds
    confirmation, payments and standing orders. Obtain one with :meth:`OpenBankClient.exchange_code`."""

    def __init__(self, channel: grpc.aio.Channel, tokens: ConsentTokens, invoker: Invoker) -> None:
        self.tokens = tokens
        self._invoker = invoker
        self._accounts = account_pb2_grpc.AccountServiceStub(channel)
        self._payments = payment_pb2_grpc.PaymentServiceStub(channel)
        self._mandates = mandate_pb2_grpc.MandateServiceStub(channel)
        self._credit = credit_pb2_grpc.CreditServiceStub(channel)

    @property
    def consent(self) -> str:
        """The consent, ``consents/{consent}``."""
        return self.tokens.consent

    async def _call(self, method: Any, request: Any, *, mutating: bool = False) -> Any:
        return await self._invoker.unary(method, request, self.tokens, mutating=mutating)

    def accounts(self, page_size: int = 0) -> AsyncIterator[account_pb2.Account]:
        """Every account of the consent, in the order the customer chose them."""
        return paginate(
            lambda r: self._call(self._accounts.ListAccounts, r),
            account_pb2.ListAccountsRequest(page_size=page_size),
            "accounts",
        )

    async def account(self, name: str) -> account_pb2.Account:
        """One account of the consent (``accounts/{account}``)."""
        return (await self._call(self._accounts.GetAccount, account_pb2.GetAccountRequest(name=name))).account

    async def balance(self, account: str) -> account_pb2.Balance:
        """The balances of one account of the consent."""
        return (await self._call(self._accounts.GetBalance, account_pb2.GetBalanceRequest(account=account))).balance

    def transactions(
        self,
        account: str,
        *,
        page_size: int = 0,
        from_booking_time: dt.datetime | None = None,
        to_booking_time: dt.datetime | None = None,
    ) -> AsyncIterator[account_pb2.Transaction]:
        """Every transaction of one account, newest first, optionally within booking times."""
        request = account_pb2.ListTransactionsRequest(parent=account, page_size=page_size)
        if from_booking_time is not None:
            request.from_booking_time.CopyFrom(timestamp(from_booking_time))
        if to_booking_time is not None:
            request.to_booking_time.CopyFrom(timestamp(to_booking_time))
        return paginate(lambda r: self._call(self._accounts.ListTransactions, r), request, "transactions")

    async def confirm_funds(self, account: str, amount: money_pb2.Money) -> bool:
        """Whether ``amount`` could be spent from ``account`` now (nothing is held)."""
        request = account_pb2.ConfirmFundsRequest(account=account, amount=amount)
        return (await self._call(self._accounts.ConfirmFunds, request)).funds_available

    async def create_payment(
        self,
        debtor_account: str,
        amount: money_pb2.Money,
        *,
        creditor_wallet: str = "",
        creditor_account: str = "",
        creditor_external: payment_pb2.ExternalCreditor | None = None,
        payment_type: int | None = None,
        remittance_information: str = "",
        end_to_end_id: str = "",
        request_id: str = "",
        requested_execution_time: dt.datetime | None = None,
        psu_context: payment_pb2.PsuContext | None = None,
    ) -> payment_pb2.Payment:
        """Initiate a payment: a wallet top-up (``creditor_wallet="partners/..."``), a
        transfer (``creditor_account="accounts/..."``) or a payment to another bank
        (``creditor_external=interbank.creditor(...)``, see :mod:`openbank_sdk.interbank`);
        with ``requested_execution_time`` a future-dated one, SCHEDULED until then (the
        consent must grant SCHEDULE_PAYMENTS).

        ``request_id`` defaults to a fresh key; pass your own (persisted before sending) to be
        able to retry after a crash and get the same payment back. ``psu_context``: the customer
        in front of you (:func:`openbank_sdk.risk.psu_context`), a signal of the bank's risk
        decision; the payment may come back waiting for the customer or a review
        (:func:`openbank_sdk.risk.waiting`).
        """
        if sum(map(bool, (creditor_wallet, creditor_account, creditor_external))) != 1:
            raise ValueError("give exactly one of creditor_wallet, creditor_account and creditor_external")
        if payment_type is None:
            payment_type = (
                payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP
                if creditor_wallet
                else payment_pb2.PAYMENT_TYPE_EXTERNAL_TRANSFER
                if creditor_external
                else payment_pb2.PAYMENT_TYPE_TRANSFER
            )
        request = payment_pb2.CreatePaymentRequest(
            request_id=request_id,
            debtor_account=debtor_account,
            amount=amount,
            type=payment_type,
            remittance_information=remittance_information,
            end_to_end_id=end_to_end_id,
        )
        if creditor_wallet:
            request.creditor_wallet = creditor_wallet
        elif creditor_external is not None:
            request.creditor_external.CopyFrom(creditor_external)
        else:
            request.creditor_account = creditor_account
        if requested_execution_time is not None:
            request.requested_execution_time.CopyFrom(timestamp(requested_execution_time))
        if psu_context is not None:
            request.psu_context.CopyFrom(psu_context)
        return (await self._call(self._payments.CreatePayment, request, mutating=True)).payment

    async def get_payment(self, name: str) -> payment_pb2.Payment:
        """One payment made under this consent."""
        return (await self._call(self._payments.GetPayment, payment_pb2.GetPaymentRequest(name=name))).payment

    def list_payments(self, *, state: int = 0, page_size: int = 0) -> AsyncIterator[payment_pb2.Payment]:
        """Every payment made under this consent, newest first (optionally in one state)."""
        request = payment_pb2.ListPaymentsRequest(state=state, page_size=page_size)
        return paginate(lambda r: self._call(self._payments.ListPayments, r), request, "payments")

    async def cancel_payment(self, name: str, *, request_id: str = "") -> payment_pb2.Payment:
        """Cancel a payment whose funds are not held yet (FailedPrecondition otherwise)."""
        request = payment_pb2.CancelPaymentRequest(request_id=request_id, name=name)
        return (await self._call(self._payments.CancelPayment, request, mutating=True)).payment


class OpenBankClient(DecoupledCalls, DisputeCalls, OnboardingCalls):
    """A partner's connection to the mesh's gateway.

    Partner-wide calls (consents, the payment stream, settlement, JWKS) use a client-credentials
    token fetched and renewed on demand; consent-bound calls go through a :class:`ConsentSession`.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        client_id: str,
        client_secret: str,
        *,
        scopes: Sequence[str] = PARTNER_WIDE_SCOPES,
        retry: RetryPolicy = DEFAULT_RETRY,
        timeout: float = 10.0,
        customer_ip_address: str | None = None,
        refresh_margin: float = 30.0,
    ) -> None:
        self.channel = channel
        self.credentials = ClientCredentials(client_id, client_secret)
        self.invoker = Invoker(retry=retry, timeout=timeout, customer_ip_address=customer_ip_address)
        self.tokens = ClientCredentialsTokens(
            channel, self.credentials, scopes, retry=retry, refresh_margin=refresh_margin, timeout=timeout
        )
        self._refresh_margin = refresh_margin
        self._retry, self._timeout = retry, timeout
        self._token_stub = token_pb2_grpc.TokenServiceStub(channel)
        self._consents = consent_pb2_grpc.ConsentServiceStub(channel)
        self._authorizations = authorization_pb2_grpc.AuthorizationServiceStub(channel)
        self._payments = payment_pb2_grpc.PaymentServiceStub(channel)
        self._settlement = settlement_pb2_grpc.SettlementServiceStub(channel)

    @classmethod
    def connect(
        cls,
        target: str,
        client_id: str,
        client_secret: str,
        *,
        insecure: bool = False,
        ca_file: str | Path | None = None,
        client_cert_file: str | Path | None = None,
        client_key_file: str | Path | None = None,
        **options: Any,
    ) -> OpenBankClient:
        """Open a channel to ``target`` (TLS unless ``insecure``; mTLS with a client certificate)."""
        channel = open_channel(
            target,
            insecure=insecure,
            ca_file=ca_file,
            client_cert_file=client_cert_file,
            client_key_file=client_key_file,
        )
        return cls(channel, client_id, client_secret, **options)

    async def close(self) -> None:
        """Close the channel."""
        await self.channel.close()

    async def __aenter__(self) -> OpenBankClient:
        """``async with OpenBankClient.connect(...) as bank:`` closes the channel at the end."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Close the channel."""
        await self.close()

    @property
    def last_headers(self) -> dict[str, str]:
        """Initial metadata of the last unary answer (``ratelimit-*``, interaction id)."""
        return self.invoker.last_headers

    async def _call(self, method: Any, request: Any, *, mutating: bool = False) -> Any:
        return await self.invoker.unary(method, request, self.tokens, mutating=mutating)

    # ---- tokens -------------------------------------------------------------------------

    async def jwks(self) -> token_pb2.GetJwksResponse:
        """The public keys that verify the mesh's access tokens."""
        return await self.invoker.unary(self._token_stub.GetJwks, token_pb2.GetJwksRequest(), None)

    async def revoke_token(self, token: str) -> None:
        """Revoke one of this partner's access or refresh tokens (RFC 7009)."""
        request = token_pb2.RevokeTokenRequest(
            client_id=self.credentials.client_id, client_secret=self.credentials.client_secret, token=token
        )
        await self.invoker.unary(self._token_stub.RevokeToken, request, None)

    async def exchange_code(self, code: str, code_verifier: str, scopes: Sequence[str] = ()) -> ConsentSession:
        """Exchange the customer's authorization code (and the PKCE verifier) for a consent session."""
        tokens = await ConsentTokens.exchange_code(
            self.channel,
            self.credentials,
            code,
            code_verifier,
            scopes,
            refresh_margin=self._refresh_margin,
            timeout=self.invoker.timeout,
        )
        return ConsentSession(self.channel, tokens, self.invoker)

    def session(self, tokens: ConsentTokens) -> ConsentSession:
        """A consent session from tokens obtained earlier (e.g. restored refresh token)."""
        return ConsentSession(self.channel, tokens, self.invoker)

    # ---- consents -----------------------------------------------------------------------

    async def create_consent(
        self,
        permissions: Iterable[int] = ALL_PERMISSIONS,
        *,
        expire_time: dt.datetime | None = None,
        valid_for: dt.timedelta = dt.timedelta(days=90),
        per_payment_limit: money_pb2.Money | None = None,
        period_limit: money_pb2.Money | None = None,
        period: int = consent_pb2.CONSENT_PERIOD_UNSPECIFIED,
        reads_per_day: int = 0,
        pkce: Pkce | None = None,
        request_id: str = "",
        mandate: consent_pb2.Mandate | None = None,
    ) -> PendingConsent:
        """Create a consent awaiting the customer's authorisation, with a fresh PKCE pair (a
        payment mandate with ``mandate``, see :func:`openbank_sdk.mandates.mandate`)."""
        pkce = pkce or Pkce.generate()
        expires = expire_time or dt.datetime.now(dt.UTC) + valid_for
        request = consent_pb2.CreateConsentRequest(
            request_id=request_id,
            permissions=list(permissions),
            expire_time=timestamp(expires),
            period=period,
            reads_per_day=reads_per_day,
            code_challenge=pkce.challenge,
            code_challenge_method=pkce.method,
        )
        if per_payment_limit is not None:
            request.per_payment_limit.CopyFrom(per_payment_limit)
        if period_limit is not None:
            request.period_limit.CopyFrom(period_limit)
        if mandate is not None:
            request.mandate.CopyFrom(mandate)
        response = await self._call(self._consents.CreateConsent, request, mutating=True)
        return PendingConsent(consent=response.consent, pkce=pkce)

    async def get_consent(self, name: str) -> consent_pb2.Consent:
        """One of this partner's consents."""
        return (await self._call(self._consents.GetConsent, consent_pb2.GetConsentRequest(name=name))).consent

    async def revoke_consent(self, name: str, *, request_id: str = "") -> consent_pb2.Consent:
        """Revoke one of this partner's consents (final)."""
        request = consent_pb2.RevokeConsentRequest(request_id=request_id, name=name)
        return (await self._call(self._consents.RevokeConsent, request, mutating=True)).consent

    async def push_authorization_request(
        self, pending: PendingConsent, redirect_uri: str, *, state: str = "", request_id: str = ""
    ) -> PushedAuthorization:
        """Push the redirect flow's authorisation request for ``pending`` (RFC 9126 PAR):
        ``redirect_uri`` must be one the bank registered for this partner, exactly; ``state``
        defaults to a fresh random value (keep it to check the redirect)."""
        state = state or secrets.token_urlsafe(24)
        request = authorization_pb2.PushAuthorizationRequestRequest(
            request_id=request_id,
            consent=pending.name,
            redirect_uri=redirect_uri,
            code_challenge=pending.pkce.challenge,
            code_challenge_method=pending.pkce.method,
            state=state,
        )
        answer = await self._call(self._authorizations.PushAuthorizationRequest, request, mutating=True)
        return PushedAuthorization(answer.request_uri, answer.expires_in, state, self.credentials.client_id)

    # ---- refunds ------------------------------------------------------------------------

    async def refund_payment(
        self,
        name: str,
        *,
        amount: money_pb2.Money | None = None,
        reason: str = "CUST",
        remittance_information: str = "",
        request_id: str = "",
    ) -> payment_pb2.Payment:
        """Refund a settled payment to this partner's wallet, in full (``amount`` None) or in
        part; the answer is the refund, a payment of type REFUND linked to the original.

        ``reason`` is an ISO 20022 return reason code (CUST, DUPL, FRAD, TECH, UPAY, AM05,
        MD06, FOCR). Needs no consent: it uses a client-credentials token with
        ``payments:write``, asked for on first use (so partners without that scope can use
        the rest of the client)."""
        request = payment_pb2.RefundPaymentRequest(
            request_id=request_id, name=name, reason=reason, remittance_information=remittance_information
        )
        if amount is not None:
            request.amount.CopyFrom(amount)
        tokens = self._tokens_for("payments:write")
        answer = await self.invoker.unary(self._payments.RefundPayment, request, tokens, mutating=True)
        return answer.refund

    # ---- payment events -----------------------------------------------------------------

    async def watch_payments(
        self,
        after_cursor: str = "",
        *,
        include_snapshot: bool = False,
        max_reconnects: int = 5,
        reconnect_on_end: bool = True,
    ) -> AsyncIterator[payment_pb2.PaymentEvent]:
        """Every state change of this partner's payments, resuming after disconnects.

        Starts after ``after_cursor`` (empty: from now). When the stream breaks (UNAVAILABLE,
        the gateway's stream deadline, an expired token) or the server ends it, the SDK
        reconnects with the cursor of the last event it yielded, so no event is lost or
        repeated. ``max_reconnects`` consecutive failures without an event raise the last
        error. Store ``event.cursor`` after processing each event to resume across restarts.
        """
        cursor = after_cursor
        failures = 0
        while True:
            request = payment_pb2.WatchPaymentsRequest(after_cursor=cursor, include_snapshot=include_snapshot)
            metadata = await self.invoker.metadata(self.tokens, str(uuid.uuid4()))
            call = self._payments.WatchPayments(request, metadata=metadata)
            try:
                async for response in call:
                    failures = 0
                    cursor = response.event.cursor or cursor
                    yield response.event
                if not reconnect_on_end:
                    return
                error: OpenBankError | None = None
            except grpc.aio.AioRpcError as rpc_error:
                error = from_rpc_error(rpc_error)
                if error.reason in _RENEWABLE_TOKEN_REASONS:
                    await self.tokens.refresh()
                elif error.code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise error from None
            finally:
                call.cancel()
            failures += 1
            if failures > max_reconnects:
                if error is not None:
                    raise error
                return
            await asyncio.sleep(self.invoker.retry.backoff(failures, error.retry_after if error else None))

    # ---- settlement ---------------------------------------------------------------------

    async def position(self, participant: str, currency_code: str) -> settlement_pb2.Position:
        """This partner's participant's position in one currency."""
        request = settlement_pb2.GetPositionRequest(participant=participant, currency_code=currency_code)
        return (await self._call(self._settlement.GetPosition, request)).position

    def windows(
        self, *, currency_code: str = "", state: int = 0, page_size: int = 0
    ) -> AsyncIterator[settlement_pb2.SettlementWindow]:
        """Every settlement window, newest first, optionally of one currency or state."""
        request = settlement_pb2.ListSettlementWindowsRequest(
            currency_code=currency_code, state=state, page_size=page_size
        )
        return paginate(lambda r: self._call(self._settlement.ListSettlementWindows, r), request, "settlement_windows")

    async def report(self, window: str) -> settlement_pb2.SettlementReport:
        """A window's net settlement report (this partner's own figures only)."""
        request = settlement_pb2.GetSettlementReportRequest(window=window)
        return (await self._call(self._settlement.GetSettlementReport, request)).report
