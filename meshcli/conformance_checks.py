"""The conformance checks behind ``openbank-mesh conformance`` (see ``meshcli.conformance``):
the partner journey and the contract's promises, driven through the gateway only (and the
bank's public web pages, for the customer's part, when ``bank_web`` is given)."""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from openbank.account.v1 import account_admin_pb2, account_pb2, account_pb2_grpc, customer_account_pb2, ledger_pb2
from openbank.common.v1 import options_pb2
from openbank.identity.v1 import (
    authorization_pb2,
    consent_pb2,
    consent_pb2_grpc,
    customer_pb2,
    partner_pb2,
    signing_key_pb2,
    token_pb2,
)
from openbank.payment.v1 import dispute_pb2, mandate_pb2, payment_admin_pb2, payment_pb2
from openbank.settlement.v1 import position_pb2, settlement_admin_pb2, settlement_pb2, settlement_pb2_grpc

try:  # the SDK is its own package in sdk/; a source checkout may not have it installed
    import openbank_sdk as ob
except ImportError:  # pragma: no cover - depends on the install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sdk"))
    import openbank_sdk as ob
from openbank_sdk.bank_pages import SandboxBankPages
from openbank_sdk.sandbox import SandboxBankApp

from meshcli.conformance_disputes import DisputeChecks
from meshcli.conformance_events import EventChecks
from meshcli.conformance_mandates import MandateChecks
from meshcli.conformance_onboarding import OnboardingChecks
from meshcli.conformance_payments import PaymentChecks
from meshcli.conformance_redirect import RedirectChecks
from meshcli.conformance_support import CheckFailed, _describe, _expect, expect_error

CONTRACT_MODULES = (
    token_pb2,
    consent_pb2,
    authorization_pb2,
    partner_pb2,
    customer_pb2,
    signing_key_pb2,
    account_pb2,
    account_admin_pb2,
    customer_account_pb2,
    ledger_pb2,
    payment_pb2,
    payment_admin_pb2,
    mandate_pb2,
    dispute_pb2,
    settlement_pb2,
    position_pb2,
    settlement_admin_pb2,
)
# A documentation address (RFC 5737): marks the customer as present, as FAPI asks, so the
# run's reads are not counted against the consent's unattended reads.
DEFAULT_CUSTOMER_IP = "203.0.113.10"
NOT_ANSWERING = (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAVAILABLE)


@dataclass(frozen=True)
class CheckResult:
    """One row of the report."""

    name: str
    passed: bool
    detail: str


@dataclass
class ConformanceConfig:
    """Where the deployment is and whose credentials the run uses."""

    gateway: str
    client_id: str
    client_secret: str = field(repr=False)
    customer_username: str
    customer_password: str = field(repr=False)
    customer_totp_secret: str = field(repr=False)
    # The test customer's funded account; with bank_web, the first one the bank's page offers.
    customer_account: str = ""
    # Public mode: the bank's web app and one of the partner's registered redirect URIs.
    bank_web: str = ""
    redirect_uri: str = ""
    bank_web_ca: Path | None = None
    # Internal mode (no bank_web): the bank app's endpoint and credentials.
    bank_app_endpoint: str = ""
    bank_app_client_id: str = ""
    bank_app_client_secret: str = field(default="", repr=False)
    tls_ca: Path | None = None
    customer_ip: str = DEFAULT_CUSTOMER_IP
    timeout: float = 10.0


def contract_methods() -> dict[str, bool]:
    """Every rpc of the contract, ``/package.Service/Method`` -> whether it is public."""
    methods: dict[str, bool] = {}
    for module in CONTRACT_MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                policy = method.GetOptions().Extensions[options_pb2.policy]
                methods[f"/{service.full_name}/{method.name}"] = policy.visibility == options_pb2.VISIBILITY_PUBLIC
    return methods


class CallRecorder(grpc.aio.UnaryUnaryClientInterceptor):
    """Remembers the status of every unary rpc sent, to prove each public rpc answered."""

    def __init__(self) -> None:
        self.codes: dict[str, list[grpc.StatusCode]] = {}

    def record(self, method: str, code: grpc.StatusCode) -> None:
        """Note one answer."""
        self.codes.setdefault(method, []).append(code)

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        call = await continuation(client_call_details, request)
        method = client_call_details.method
        self.record(method.decode() if isinstance(method, bytes) else method, await call.code())
        return call


class ConformanceRun(PaymentChecks, RedirectChecks, MandateChecks, EventChecks, DisputeChecks, OnboardingChecks):
    """The checks, in journey order; later checks use what earlier ones created."""

    def __init__(self, config: ConformanceConfig) -> None:
        self.config = config
        self.recorder = CallRecorder()
        self.channel = self._channel(config.gateway, [self.recorder])
        # Public mode plays the customer on the bank's pages; internal mode calls the bank app.
        self.pages = SandboxBankPages(config.bank_web, ca_file=config.bank_web_ca) if config.bank_web else None
        self.bank_channel = None if config.bank_web else self._channel(config.bank_app_endpoint, [])
        self.used_authorization_url = ""
        retry = ob.RetryPolicy(max_attempts=2, initial_backoff=0.2, max_backoff=0.5)
        self.client = ob.OpenBankClient(
            self.channel,
            config.client_id,
            config.client_secret,
            retry=retry,
            timeout=config.timeout,
            customer_ip_address=config.customer_ip,
        )
        self.invoker = self.client.invoker
        self.bank_app = (
            SandboxBankApp(
                self.bank_channel, config.bank_app_client_id, config.bank_app_client_secret, timeout=config.timeout
            )
            if self.bank_channel is not None
            else None
        )
        self.results: list[CheckResult] = []
        self.pending: ob.PendingConsent | None = None
        self.session: ob.ConsentSession | None = None
        self.partner = ""
        self.payment: payment_pb2.Payment | None = None
        self.replayed_consent_request: consent_pb2.CreateConsentRequest | None = None

    def _channel(self, target: str, interceptors: list[Any]) -> grpc.aio.Channel:
        if self.config.tls_ca is None:
            return grpc.aio.insecure_channel(target, interceptors=interceptors)
        credentials = ob.tls_credentials(ca_file=self.config.tls_ca)
        return grpc.aio.secure_channel(target, credentials, interceptors=interceptors)

    async def close(self) -> None:
        """Close both channels."""
        await self.channel.close()
        if self.bank_channel is not None:
            await self.bank_channel.close()

    # ---- plumbing ---------------------------------------------------------------------

    async def _raw(self, method: Any, request: Any, metadata: tuple[tuple[str, str], ...]) -> Any:
        """One call with exactly the given metadata (for the authentication checks)."""
        try:
            return await method(request, metadata=metadata, timeout=self.config.timeout)
        except grpc.aio.AioRpcError as error:
            raise ob.from_rpc_error(error) from None

    def _consent_session(self) -> ob.ConsentSession:
        if self.session is None:
            raise CheckFailed("no consent-bound token (the consent flow failed)")
        return self.session

    async def check(self, name: str, body: Callable[[], Awaitable[str]]) -> None:
        """Run one check and record its row; nothing it raises stops the run."""
        try:
            detail = await body()
            self.results.append(CheckResult(name, True, detail))
        except CheckFailed as failure:
            self.results.append(CheckResult(name, False, str(failure)))
        except ob.OpenBankError as error:
            self.results.append(CheckResult(name, False, f"{_describe(error)}: {error.message[:100]}"))
        except Exception as error:  # a broken deployment can answer anything; report, don't crash
            self.results.append(CheckResult(name, False, f"{type(error).__name__}: {str(error)[:100]}"))

    # ---- the checks -------------------------------------------------------------------

    async def run(self) -> list[CheckResult]:
        """Every check, then the coverage of public and internal rpcs."""
        steps: list[tuple[str, Callable[[], Awaitable[str]]]] = [
            ("token: client_credentials grant", self.token_client_credentials),
            ("token: JWKS lists ES256 keys", self.token_jwks),
            ("consent: CreateConsent awaits authorisation", self.consent_create),
            ("ratelimit: ratelimit-* metadata on answers", self.ratelimit_headers),
            ("idempotency: replay returns the first answer", self.idempotency_replay),
            ("idempotency: other payload is REQUEST_ID_REUSED", self.idempotency_reused),
            ("consent: GetConsent", self.consent_get),
            ("consent: SCA authorisation + code exchange (PKCE)", self.consent_authorise),
            ("redirect: unregistered redirect_uri is REDIRECT_URI_NOT_REGISTERED", self.redirect_unregistered_uri),
            ("token: refresh rotates the refresh token", self.token_refresh),
            ("accounts: list, get, balance, confirm funds", self.accounts_reads),
            ("payments: wallet top-up created and final", self.payment_create),
            ("payments: replay and REQUEST_ID_REUSED", self.payment_idempotency),
            ("payments: the customer present (psu_context)", self.payment_customer_present),
            ("payments: get, list, cancel", self.payment_get_list_cancel),
            ("payments: WatchPayments streams the new payment", self.payment_watch),
            ("events: StreamEvents gets a new payment's events once, PollEvents the same", self.events_stream_and_poll),
            ("events: push endpoint status, a malformed target refused", self.events_endpoint),
            ("payments: refund in part, linked both ways, never above what was paid", self.payment_refund),
            ("payments: standing order and future-dated payment, created and cancelled", self.payment_schedules),
            ("payments: to another bank, settled or rejected by it, a bad IBAN refused", self.payment_external),
            ("mandates: paid without asking again, only its creditor, within its limits", self.mandate_payments),
            ("disputes: the partner's listed page by page, each readable, another's NOT_FOUND", self.disputes_read),
            ("onboarding: a bad application names the field, an unknown one NOT_FOUND", self.onboarding_refusals),
            ("pagination: page_size 1 walks every page", self.pagination_walk),
            ("pagination: bad page_token is PAGE_TOKEN_INVALID", self.pagination_bad_token),
            ("pagination: negative page_size is FIELD_INVALID", self.pagination_negative_size),
            ("errors: bad token is TOKEN_INVALID", self.error_bad_token),
            ("errors: no token is TOKEN_MISSING", self.error_no_token),
            ("errors: missing scope is INSUFFICIENT_SCOPE", self.error_missing_scope),
            ("errors: unknown account is RESOURCE_NOT_FOUND", self.error_unknown_account),
            ("errors: malformed name is FIELD_INVALID + BadRequest", self.error_malformed_name),
            ("settlement: windows, report, position", self.settlement_reads),
            ("consent: RevokeConsent", self.consent_revoke),
            ("token: RevokeToken", self.token_revoke),
            ("decoupled: start, AUTHORIZATION_PENDING, approval, token", self.decoupled_flow),
            ("internal rpcs hidden (UNIMPLEMENTED at the gateway)", self.internal_hidden),
            ("reflection describes no internal service or rpc", self.reflection_public_only),
        ]
        if self.pages is not None:  # what only the bank's pages show
            at = next(i for i, (name, _) in enumerate(steps) if name.startswith("redirect: unregistered")) + 1
            steps[at:at] = [
                ("redirect: a used authorisation link leads nowhere", self.redirect_link_used_once),
                ("redirect: refusal returns access_denied with state", self.redirect_refusal),
            ]
        for name, body in steps:
            await self.check(name, body)
        for method, public in sorted(contract_methods().items()):
            if public:
                await self.check(f"rpc answers: {method.rsplit('.', 1)[-1]}", lambda m=method: self.answered(m))
        return self.results

    async def token_client_credentials(self) -> str:
        tokens = await self.client.tokens.refresh()
        _expect(tokens.access_token.count(".") == 2, "the access token is not a compact JWS")
        _expect(tokens.expires_at > time.monotonic(), "expires_in is not positive")
        _expect(not tokens.refresh_token, "client_credentials must not return a refresh token")
        return f"scopes {' '.join(tokens.scopes)}"

    async def token_jwks(self) -> str:
        answer = await self.client.jwks()
        _expect(bool(answer.keys), "no keys")
        _expect(all(k.alg == "ES256" and k.kid for k in answer.keys), "a key without kid or not ES256")
        _expect(json.loads(answer.jwks_json).get("keys") is not None, "jwks_json is not a JWKS document")
        return f"{len(answer.keys)} key(s)"

    async def consent_create(self) -> str:
        self.pending = await self.client.create_consent(
            ob.ALL_PERMISSIONS, per_payment_limit=ob.money(100_000, "EUR"), request_id=f"conf-{uuid.uuid4().hex}"
        )
        consent = self.pending.consent
        _expect(consent.name.startswith("consents/"), f"name {consent.name!r}")
        _expect(consent.state == consent_pb2.CONSENT_STATE_AWAITING_AUTHORISATION, f"state {consent.state}")
        self.partner = consent.partner
        return consent.name

    async def ratelimit_headers(self) -> str:
        await self.client.jwks()
        headers = self.client.last_headers
        missing = [k for k in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset") if k not in headers]
        _expect(not missing, f"missing {missing}")
        return f"limit {headers['ratelimit-limit']}, remaining {headers['ratelimit-remaining']}"

    def _consent_request(self, request_id: str, reads_per_day: int = 0) -> consent_pb2.CreateConsentRequest:
        pkce = ob.Pkce.generate()
        expire = consent_pb2.CreateConsentRequest().expire_time
        expire.FromSeconds(int(time.time()) + 86_400)
        return consent_pb2.CreateConsentRequest(
            request_id=request_id,
            permissions=[ob.READ_ACCOUNTS],
            expire_time=expire,
            reads_per_day=reads_per_day,
            code_challenge=pkce.challenge,
            code_challenge_method="S256",
        )

    async def idempotency_replay(self) -> str:
        stub = consent_pb2_grpc.ConsentServiceStub(self.channel)
        request = self._consent_request(f"conf-{uuid.uuid4().hex}")
        first = await self.invoker.unary(stub.CreateConsent, request, self.client.tokens, mutating=True)
        again = await self.invoker.unary(stub.CreateConsent, request, self.client.tokens, mutating=True)
        _expect(first.consent.name == again.consent.name, f"{first.consent.name} then {again.consent.name}")
        self.replayed_consent_request = request
        return f"CreateConsent twice -> {first.consent.name}"

    async def idempotency_reused(self) -> str:
        stub = consent_pb2_grpc.ConsentServiceStub(self.channel)
        request = self.replayed_consent_request or self._consent_request(f"conf-{uuid.uuid4().hex}")
        await self.invoker.unary(stub.CreateConsent, request, self.client.tokens, mutating=True)
        changed = consent_pb2.CreateConsentRequest()
        changed.CopyFrom(request)
        changed.reads_per_day = request.reads_per_day + 7
        return await expect_error(
            self.invoker.unary(stub.CreateConsent, changed, self.client.tokens, mutating=True),
            grpc.StatusCode.ALREADY_EXISTS,
            "REQUEST_ID_REUSED",
        )

    async def consent_get(self) -> str:
        _expect(self.pending is not None, "no consent was created")
        assert self.pending is not None
        consent = await self.client.get_consent(self.pending.name)
        _expect(consent.name == self.pending.name, f"asked {self.pending.name}, got {consent.name}")
        return f"state {consent_pb2.ConsentState.Name(consent.state)}"

    async def consent_authorise(self) -> str:
        _expect(self.pending is not None, "no consent was created")
        assert self.pending is not None
        code = await self.authorise_consent(self.pending)
        _expect(bool(code), "no authorization code")
        self.session = await self.client.exchange_code(code, self.pending.pkce.verifier)
        tokens = self.session.tokens.current
        assert tokens is not None
        _expect(tokens.consent == self.pending.name, f"token bound to {tokens.consent!r}")
        _expect(bool(tokens.refresh_token), "no refresh token")
        consent = await self.client.get_consent(self.pending.name)
        _expect(consent.state == consent_pb2.CONSENT_STATE_AUTHORISED, f"consent state {consent.state}")
        how = "the bank's pages (PAR, sign-in, consent, redirect)" if self.pages else "the bank app's rpc"
        return f"token bound to {tokens.consent}, via {how}"

    async def token_refresh(self) -> str:
        session = self._consent_session()
        before = session.tokens.current
        assert before is not None
        after = await session.tokens.refresh()
        _expect(after.refresh_token != before.refresh_token, "the refresh token was not rotated")
        _expect(after.consent == before.consent, "the refreshed token lost its consent")
        return "new access and refresh token"

    async def accounts_reads(self) -> str:
        session = self._consent_session()
        accounts = await ob.collect(session.accounts())
        names = [a.name for a in accounts]
        _expect(names == [self.config.customer_account], f"ListAccounts gave {names}")
        account = await session.account(self.config.customer_account)
        _expect(account.name == self.config.customer_account and len(account.currency_code) == 3, "GetAccount shape")
        _expect(not any(ch.isdigit() for ch in account.display_number[:-4]), "the account number is not masked")
        balance = await session.balance(account.name)
        _expect(balance.available.currency_code == account.currency_code, "balance in another currency")
        available = await session.confirm_funds(account.name, ob.money(1, account.currency_code))
        _expect(available is True, "ConfirmFunds says a funded account cannot spend 1 minor unit")
        return f"{account.currency_code} available {balance.available.minor_units}"

    async def pagination_walk(self) -> str:
        session = self._consent_session()
        account = self.config.customer_account
        one_by_one = [t.name async for t in session.transactions(account, page_size=1)]
        at_once = [t.name async for t in session.transactions(account, page_size=500)]
        _expect(one_by_one == at_once, f"page_size 1 gave {len(one_by_one)}, one page gave {len(at_once)}")
        _expect(len(set(one_by_one)) == len(one_by_one), "a transaction appeared twice")
        return f"{len(one_by_one)} transactions, one per page"

    async def pagination_bad_token(self) -> str:
        session = self._consent_session()
        stub = account_pb2_grpc.AccountServiceStub(self.channel)
        request = account_pb2.ListTransactionsRequest(parent=self.config.customer_account, page_token="not-a-token")
        return await expect_error(
            self.invoker.unary(stub.ListTransactions, request, session.tokens),
            grpc.StatusCode.INVALID_ARGUMENT,
            "PAGE_TOKEN_INVALID",
        )

    async def pagination_negative_size(self) -> str:
        request = settlement_pb2.ListSettlementWindowsRequest(page_size=-1)
        stub = settlement_pb2_grpc.SettlementServiceStub(self.channel)
        return await expect_error(
            self.invoker.unary(stub.ListSettlementWindows, request, self.client.tokens),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
            bad_request_field="page_size",
        )

    async def error_bad_token(self) -> str:
        stub = consent_pb2_grpc.ConsentServiceStub(self.channel)
        bogus = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJub2JvZHkifQ.c2lnbmF0dXJl"
        return await expect_error(
            self._raw(
                stub.GetConsent,
                consent_pb2.GetConsentRequest(name="consents/x"),
                (("authorization", f"Bearer {bogus}"),),
            ),
            grpc.StatusCode.UNAUTHENTICATED,
            "TOKEN_INVALID",
        )

    async def error_no_token(self) -> str:
        stub = consent_pb2_grpc.ConsentServiceStub(self.channel)
        return await expect_error(
            self._raw(stub.GetConsent, consent_pb2.GetConsentRequest(name="consents/x"), ()),
            grpc.StatusCode.UNAUTHENTICATED,
            "TOKEN_MISSING",
        )

    async def error_missing_scope(self) -> str:
        narrow = ob.ClientCredentialsTokens(
            self.channel, self.client.credentials, ["consents:read"], timeout=self.config.timeout
        )
        stub = consent_pb2_grpc.ConsentServiceStub(self.channel)
        return await expect_error(
            self.invoker.unary(stub.CreateConsent, self._consent_request(""), narrow, mutating=True),
            grpc.StatusCode.PERMISSION_DENIED,
            "INSUFFICIENT_SCOPE",
        )

    async def error_unknown_account(self) -> str:
        session = self._consent_session()
        return await expect_error(
            session.balance(f"accounts/conformance-{uuid.uuid4().hex}"),
            grpc.StatusCode.NOT_FOUND,
            "RESOURCE_NOT_FOUND",
        )

    async def error_malformed_name(self) -> str:
        session = self._consent_session()
        return await expect_error(
            session.account("not a resource name"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
            bad_request_field="name",
        )

    async def settlement_reads(self) -> str:
        windows = await ob.collect(self.client.windows())
        _expect(all(w.name.startswith("settlementWindows/") for w in windows), "a window name is malformed")
        one_by_one = [w.name async for w in self.client.windows(page_size=1)]
        _expect(one_by_one == [w.name for w in windows], "page_size 1 lists other windows")
        participant = ""
        if windows:
            report = await self.client.report(windows[0].name)
            _expect(report.window == windows[0].name, "the report is of another window")
            _expect(len(report.net_positions) <= 1, "a partner sees other participants' net positions")
            participant = report.net_positions[0].participant if report.net_positions else ""
        if participant:
            position = await self.client.position(participant, "EUR")
            _expect(position.participant == participant, "GetPosition of another participant")
            return f"{len(windows)} window(s); own position headroom {position.headroom.minor_units}"
        # Without an own figure yet, GetPosition still answers: NOT_FOUND for an unknown participant.
        detail = await expect_error(
            self.client.position("participants/conformance-unknown", "EUR"),
            grpc.StatusCode.NOT_FOUND,
            "RESOURCE_NOT_FOUND",
        )
        return f"{len(windows)} window(s); position: {detail}"

    async def consent_revoke(self) -> str:
        pending = await self.client.create_consent([ob.READ_ACCOUNTS])
        revoked = await self.client.revoke_consent(pending.name)
        _expect(revoked.state == consent_pb2.CONSENT_STATE_REVOKED, f"state {revoked.state}")
        return f"{pending.name} REVOKED"

    async def token_revoke(self) -> str:
        throwaway = ob.ClientCredentialsTokens(
            self.channel, self.client.credentials, ["consents:read"], timeout=self.config.timeout
        )
        await self.client.revoke_token(await throwaway.token())
        return "revoked a fresh access token"

    async def internal_hidden(self) -> str:
        internal = [m for m, public in contract_methods().items() if not public]
        try:
            metadata = await self.client.tokens.metadata()
        except ob.OpenBankError:
            metadata = ()  # without a partner token: an exposed internal rpc still answers UNAUTHENTICATED
        visible: list[str] = []
        for method in internal:
            call = self.channel.unary_unary(method, request_serializer=bytes, response_deserializer=bytes)
            try:
                await call(b"", metadata=metadata, timeout=self.config.timeout)
                visible.append(f"{method} (answered OK)")
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNIMPLEMENTED:
                    visible.append(f"{method.rsplit('/', 1)[-1]} ({error.code().name})")
        _expect(not visible, f"{len(visible)} internal rpc(s) reachable: " + ", ".join(visible[:3]))
        return f"all {len(internal)} internal rpcs UNIMPLEMENTED"

    async def reflection_public_only(self) -> str:
        methods = contract_methods()
        public_services = {m.split("/")[1] for m, public in methods.items() if public}
        contract_services = {m.split("/")[1] for m in methods}
        stub = reflection_pb2_grpc.ServerReflectionStub(self.channel)
        try:
            listed = {
                s.name
                for r in await self._reflect(stub, reflection_pb2.ServerReflectionRequest(list_services=""))
                for s in r.list_services_response.service
            }
            exposed = sorted((listed & contract_services) - public_services)
            _expect(not exposed, f"lists {', '.join(exposed)}")
            # A public service's file may describe internal rpcs beside the public ones.
            described: set[str] = set()
            for service in sorted(listed & public_services):
                request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=service)
                for answer in await self._reflect(stub, request):
                    for raw in answer.file_descriptor_response.file_descriptor_proto:
                        file = descriptor_pb2.FileDescriptorProto.FromString(raw)
                        described |= {f"/{file.package}.{s.name}/{m.name}" for s in file.service for m in s.method}
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                return "reflection not offered"
            raise ob.from_rpc_error(error) from None
        internal = sorted(m.rsplit(".", 1)[-1] for m in described if m in methods and not methods[m])
        _expect(not internal, f"describes internal rpc(s) {', '.join(internal)}")
        return f"{len(listed & public_services)} public service(s) listed, no internal rpc described"

    async def _reflect(self, stub: Any, request: Any) -> list[Any]:
        responses = stub.ServerReflectionInfo(iter([request]), timeout=self.config.timeout)
        return [response async for response in responses]

    async def answered(self, method: str) -> str:
        codes = self.recorder.codes.get(method)
        _expect(bool(codes), "never called (an earlier check failed)")
        assert codes is not None
        answering = [c for c in codes if c not in NOT_ANSWERING]
        _expect(bool(answering), f"answered only {sorted({c.name for c in codes})}")
        return ", ".join(sorted({c.name for c in answering}))
