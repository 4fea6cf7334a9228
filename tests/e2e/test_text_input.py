"""Bad text never reaches a store: generated strings (NUL and other control characters, lone
surrogates, invalid UTF-8, very long values, and ordinary text) in every string field of every
public request, through the gateway of two whole meshes: one on SQLite with the embedded
defaults, one on PostgreSQL with Redis. No answer is INTERNAL, and both meshes give the same
answer (status, reason, the fields named) to the same request.

The generated value is written onto the wire as raw bytes, appended to an otherwise valid
request (protobuf keeps the last value of a field, merges a nested message and appends to a
repeated field), so it reaches the services even where protobuf's Python encoder would refuse
it (a lone surrogate); a service refuses invalid UTF-8 when it decodes the request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from google.protobuf import descriptor, descriptor_pool
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from meshcli.demo import _authorise, create_payment_consent, exchange_code
from meshcli.mesh import LocalMesh
from meshcli.operator import Operator
from meshcli.seed import seed_demo_data
from meshlib.grpc_errors import decode_status, error_info
from meshlib.policy import MethodPolicy, contract_policies
from openbank.account.v1 import account_pb2
from openbank.common.v1 import consent_permission_pb2, money_pb2
from openbank.credit.v1 import credit_pb2
from openbank.events.v1 import events_pb2
from openbank.identity.v1 import (
    authorization_pb2,
    consent_pb2,
    consent_pb2_grpc,
    decoupled_authorization_pb2,
    onboarding_pb2,
    token_pb2,
    token_pb2_grpc,
)
from openbank.payment.v1 import dispute_pb2, mandate_pb2, payment_pb2, payment_pb2_grpc
from openbank.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = {path: policy for path, policy in contract_policies().items() if policy.is_public}
CUSTOMER_PRESENT = ("x-fapi-customer-ip-address", "198.51.100.7")


# ---- the two meshes --------------------------------------------------------------------


def _generous_rate_limits(directory: Path) -> Path:
    """The gateway's limits, a thousand times higher: no example is refused for speed, so a
    limit never makes the two meshes answer differently."""
    raw = yaml.safe_load((ROOT / "gateway" / "ratelimits.yaml").read_text())

    def scale(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("rate", "burst") and isinstance(value, int):
                    node[key] = value * 1000
                else:
                    scale(value)

    scale(raw)
    raw["unattended_reads_per_day"] = 10**6
    raw["max_streams_per_partner"] = 1000
    path = directory / "ratelimits.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _generous_velocity_rules(directory: Path) -> Path:
    """Velocity rules that never trigger (they count time windows, which two meshes cross at
    slightly different moments)."""
    raw = yaml.safe_load((ROOT / "services" / "payment" / "risk_rules.yaml").read_text())
    for rule in raw["rules"]:
        for key in ("max_count", "threshold_minor", "multiplier"):
            if key in rule:
                rule[key] = 10**12
    path = directory / "velocity_rules.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@dataclass(repr=False)
class Partner:
    """One mesh as the partner sees it: the gateway, tokens and names of its own resources."""

    channel: grpc.aio.Channel
    client_token: str  # consents:read/write, settlement:read, events:read, payments:read
    consent_token: str  # bound to an authorised consent: accounts and payments
    names: dict[str, str]
    client: dict[str, str]  # the other demo partner's client credentials (token endpoint calls)

    def metadata(self, policy: MethodPolicy) -> tuple[tuple[str, str], ...]:
        """The bearer token the rpc needs (none for the token endpoint)."""
        if not policy.requires_token:
            return ()
        token = self.consent_token if policy.consent_permission else self.client_token
        return (("authorization", f"Bearer {token}"), CUSTOMER_PRESENT)


async def _partner(mesh: LocalMesh) -> Partner:
    operator = Operator(mesh.data_dir, ports=mesh.ports)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['gateway']}")
    try:
        demo = await seed_demo_data(operator, say=lambda _: None)
        acme, customer = demo["partners"]["acme"], demo["customers"]["alice"]
        tokens = token_pb2_grpc.TokenServiceStub(channel)
        consents = consent_pb2_grpc.ConsentServiceStub(channel)
        managing = await tokens.IssueToken(
            token_pb2.IssueTokenRequest(
                grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                client_id=acme["client_id"],
                client_secret=acme["client_secret"],
                scopes=[
                    "consents:write",
                    "consents:read",
                    "settlement:read",
                    "customers:onboard",
                    "events:read",
                    "payments:read",
                ],
            ),
            timeout=10,
        )
        consent, verifier = await create_payment_consent(
            consents,
            managing.access_token,
            per_payment_minor=50_000,
            reads_per_day=0,
            valid_for=dt.timedelta(days=1),
        )
        authorised = await _authorise(operator, consent.name, customer)
        bound = await exchange_code(tokens, acme, authorised.authorization_code, verifier)
        payments = payment_pb2_grpc.PaymentServiceStub(channel)
        payment = await payments.CreatePayment(
            _create_payment(customer["account"], acme["partner"]),
            metadata=(("authorization", f"Bearer {bound.access_token}"), CUSTOMER_PRESENT),
            timeout=10,
        )
        windows = await settlement_pb2_grpc.SettlementServiceStub(channel).ListSettlementWindows(
            settlement_pb2.ListSettlementWindowsRequest(currency_code="EUR"),
            metadata=(("authorization", f"Bearer {managing.access_token}"),),
            timeout=10,
        )
        names = {
            "account": customer["account"],
            "wallet": acme["partner"],
            "participant": acme["participant"],
            "consent": consent.name,
            "payment": payment.payment.name,
            "window": windows.settlement_windows[0].name,
        }
        other = demo["partners"]["zeta"]
        client = {"client_id": other["client_id"], "client_secret": other["client_secret"]}
        return Partner(channel, managing.access_token, bound.access_token, names, client)
    except BaseException:
        await channel.close()
        raise
    finally:
        await operator.close()


@dataclass(repr=False)
class Meshes:
    """The two meshes, and the loop every call of the tests runs on."""

    loop: asyncio.AbstractEventLoop
    sqlite: Partner
    postgresql: Partner


@pytest.fixture(scope="module")
def meshes(tmp_path_factory, postgres_srv, redis_srv) -> Iterator[Meshes]:  # type: ignore[no-untyped-def]
    loop = asyncio.new_event_loop()
    directory = tmp_path_factory.mktemp("text-input")
    config = {
        "OBM_RATELIMIT_CONFIG_FILE": str(_generous_rate_limits(directory)),
        "OBM_VELOCITY_RULES_FILE": str(_generous_velocity_rules(directory)),
    }
    names = ("identity", "account", "settlement", "payment", "gateway")
    prefix = f"text{uuid.uuid4().hex[:8]}"
    embedded = LocalMesh(
        directory / "sqlite", ports={name: free_port() for name in names}, quiet=True, extra_env=dict(config)
    )
    servers = LocalMesh(
        directory / "postgresql",
        ports={name: free_port() for name in names},
        quiet=True,
        extra_env={
            **config,
            "DATABASE_URL": postgres_srv.url_for(f"mesh{free_port()}"),
            "REDIS_URL": redis_srv.url,
            "OBM_INVALIDATION_CHANNEL": f"{prefix}:inv",
            "OBM_RATELIMIT_KEY_PREFIX": f"{prefix}:rl:",
        },
    )

    async def start() -> tuple[Partner, Partner]:
        await asyncio.gather(embedded.start(), servers.start())
        return await asyncio.gather(_partner(embedded), _partner(servers))

    async def stop() -> None:
        await asyncio.gather(embedded.stop(grace=10), servers.stop(grace=10))

    try:
        on_sqlite, on_postgresql = loop.run_until_complete(start())
        yield Meshes(loop, on_sqlite, on_postgresql)
        for partner in (on_sqlite, on_postgresql):
            loop.run_until_complete(partner.channel.close())
    finally:
        loop.run_until_complete(stop())
        loop.close()


# ---- valid requests, one per public rpc ------------------------------------------------


def _money(minor_units: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", minor_units=minor_units)


def _create_payment(account: str, wallet: str) -> payment_pb2.CreatePaymentRequest:
    return payment_pb2.CreatePaymentRequest(
        request_id=uuid.uuid4().hex,
        debtor_account=account,
        creditor_wallet=wallet,
        amount=_money(1),
        type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
        remittance_information="text input",
        end_to_end_id="e2e-text",
    )


def _create_standing_order(account: str, wallet: str) -> payment_pb2.CreateStandingOrderRequest:
    request = payment_pb2.CreateStandingOrderRequest(
        request_id=uuid.uuid4().hex,
        debtor_account=account,
        creditor_wallet=wallet,
        amount=_money(1),
        type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
        frequency=payment_pb2.STANDING_ORDER_FREQUENCY_MONTHLY,
        execution_count=2,
        remittance_information="text input",
    )
    request.first_execution_time.FromDatetime(dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=2))
    return request


def _create_consent() -> consent_pb2.CreateConsentRequest:
    request = consent_pb2.CreateConsentRequest(
        request_id=uuid.uuid4().hex,
        permissions=[consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS],
        per_payment_limit=_money(100),
        period_limit=_money(1000),
        period=consent_pb2.CONSENT_PERIOD_DAY,
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        code_challenge_method="S256",
    )
    request.expire_time.FromDatetime(dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(days=1))
    return request


def _submit_application() -> onboarding_pb2.SubmitApplicationRequest:
    """Valid, and declined (a document the bank does not take): it creates no customer."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    request = onboarding_pb2.SubmitApplicationRequest(
        request_id=uuid.uuid4().hex,
        applicant=onboarding_pb2.Applicant(
            given_name="Text", family_name="Input", birth_date="1990-01-01", email="t@example.org", country_code="DE"
        ),
        evidence=onboarding_pb2.VerificationEvidence(
            document_type="LIBRARY_CARD", document_number="T1", document_expiry_date="2031-01-01", method="VIDEO"
        ),
        terms=onboarding_pb2.TermsAcceptance(terms_version="2026-01"),
        currency_code="EUR",
        consent_permissions=[consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS],
        code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    )
    request.evidence.verify_time.FromDatetime(now - dt.timedelta(hours=1))
    request.terms.accept_time.FromDatetime(now - dt.timedelta(hours=1))
    return request


# Each public rpc's valid request on one mesh (names of that mesh's own resources). Mutations
# that would change what later examples see (a revoked consent, a cancelled payment) name a
# resource that does not exist, which both meshes answer alike.
VALID: dict[str, Callable[[Partner], Message]] = {
    "/openbank.account.v1.AccountService/ConfirmFunds": lambda p: account_pb2.ConfirmFundsRequest(
        account=p.names["account"], amount=_money(1)
    ),
    "/openbank.account.v1.AccountService/GetAccount": lambda p: account_pb2.GetAccountRequest(name=p.names["account"]),
    "/openbank.account.v1.AccountService/GetBalance": lambda p: account_pb2.GetBalanceRequest(
        account=p.names["account"]
    ),
    "/openbank.account.v1.AccountService/ListAccounts": lambda p: account_pb2.ListAccountsRequest(),
    "/openbank.account.v1.AccountService/ListTransactions": lambda p: account_pb2.ListTransactionsRequest(
        parent=p.names["account"]
    ),
    "/openbank.events.v1.EventService/StreamEvents": lambda p: events_pb2.StreamEventsRequest(),
    "/openbank.events.v1.EventService/PollEvents": lambda p: events_pb2.PollEventsRequest(request_id=uuid.uuid4().hex),
    # A TLS target that never answers, one attempt: no delivery reaches anyone.
    "/openbank.events.v1.EventService/SetEventEndpoint": lambda p: events_pb2.SetEventEndpointRequest(
        request_id=uuid.uuid4().hex, endpoint=events_pb2.EventEndpoint(target="partner.invalid:443", max_attempts=1)
    ),
    "/openbank.events.v1.EventService/GetEventEndpoint": lambda p: events_pb2.GetEventEndpointRequest(),
    "/openbank.identity.v1.AuthorizationService/PushAuthorizationRequest": lambda p: (
        authorization_pb2.PushAuthorizationRequestRequest(
            request_id=uuid.uuid4().hex,
            consent="consents/not-there",
            redirect_uri="https://wallet.example/callback",
            code_challenge="E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            code_challenge_method="S256",
            state="text-input",
        )
    ),
    "/openbank.identity.v1.AuthorizationService/StartDecoupledAuthorization": lambda p: (
        decoupled_authorization_pb2.StartDecoupledAuthorizationRequest(
            request_id=uuid.uuid4().hex,
            consent="consents/not-there",
            login_hint="alice",
            binding_message="Text input 1234",
        )
    ),
    "/openbank.identity.v1.ConsentService/CreateConsent": lambda p: _create_consent(),
    "/openbank.identity.v1.ConsentService/GetConsent": lambda p: consent_pb2.GetConsentRequest(name=p.names["consent"]),
    "/openbank.identity.v1.ConsentService/RevokeConsent": lambda p: consent_pb2.RevokeConsentRequest(
        request_id=uuid.uuid4().hex, name="consents/not-there"
    ),
    "/openbank.identity.v1.OnboardingService/SubmitApplication": lambda p: _submit_application(),
    "/openbank.identity.v1.OnboardingService/GetApplication": lambda p: onboarding_pb2.GetApplicationRequest(
        name="applications/not-there"
    ),
    # The demo consent grants no CREDIT: the gateway refuses these before the account service,
    # whose interceptor applies the same rules (the unit tests of meshlib.request_text).
    "/openbank.credit.v1.CreditService/RequestCreditOffer": lambda p: credit_pb2.RequestCreditOfferRequest(
        request_id=uuid.uuid4().hex, account=p.names["account"]
    ),
    "/openbank.credit.v1.CreditService/GetCreditOffer": lambda p: credit_pb2.GetCreditOfferRequest(
        name="creditOffers/not-there"
    ),
    "/openbank.credit.v1.CreditService/GetCreditLine": lambda p: credit_pb2.GetCreditLineRequest(
        name="creditLines/not-there"
    ),
    "/openbank.credit.v1.CreditService/GetCreditStatement": lambda p: credit_pb2.GetCreditStatementRequest(
        credit_line="creditLines/not-there"
    ),
    "/openbank.identity.v1.TokenService/GetJwks": lambda p: token_pb2.GetJwksRequest(),
    "/openbank.identity.v1.TokenService/IssueToken": lambda p: token_pb2.IssueTokenRequest(
        grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
        client_id=p.client["client_id"],
        client_secret=p.client["client_secret"],
        scopes=["consents:read"],
    ),
    "/openbank.identity.v1.TokenService/RevokeToken": lambda p: token_pb2.RevokeTokenRequest(
        client_id=p.client["client_id"], client_secret=p.client["client_secret"], token="not-a-token-we-issued"
    ),
    "/openbank.payment.v1.DisputeService/ListDisputes": lambda p: dispute_pb2.ListDisputesRequest(),
    "/openbank.payment.v1.DisputeService/GetDispute": lambda p: dispute_pb2.GetDisputeRequest(
        name="disputes/not-there"
    ),
    # No string field; the payment consent is not a mandate, so it answers FAILED_PRECONDITION.
    "/openbank.payment.v1.MandateService/GetMandateUsage": lambda p: mandate_pb2.GetMandateUsageRequest(),
    "/openbank.payment.v1.PaymentService/CancelPayment": lambda p: payment_pb2.CancelPaymentRequest(
        request_id=uuid.uuid4().hex, name="payments/not-there"
    ),
    "/openbank.payment.v1.PaymentService/CreatePayment": lambda p: _create_payment(
        p.names["account"], p.names["wallet"]
    ),
    "/openbank.payment.v1.PaymentService/GetPayment": lambda p: payment_pb2.GetPaymentRequest(name=p.names["payment"]),
    "/openbank.payment.v1.PaymentService/ListPayments": lambda p: payment_pb2.ListPaymentsRequest(),
    "/openbank.payment.v1.PaymentService/CreateStandingOrder": lambda p: _create_standing_order(
        p.names["account"], p.names["wallet"]
    ),
    "/openbank.payment.v1.PaymentService/GetStandingOrder": lambda p: payment_pb2.GetStandingOrderRequest(
        name="standingOrders/not-there"
    ),
    "/openbank.payment.v1.PaymentService/ListStandingOrders": lambda p: payment_pb2.ListStandingOrdersRequest(),
    "/openbank.payment.v1.PaymentService/CancelStandingOrder": lambda p: payment_pb2.CancelStandingOrderRequest(
        request_id=uuid.uuid4().hex, name="standingOrders/not-there"
    ),
    "/openbank.payment.v1.PaymentService/RefundPayment": lambda p: payment_pb2.RefundPaymentRequest(
        request_id=uuid.uuid4().hex,
        name="payments/not-there",
        amount=_money(1),
        reason="CUST",
        remittance_information="text input",
    ),
    "/openbank.payment.v1.PaymentService/WatchPayments": lambda p: payment_pb2.WatchPaymentsRequest(),
    "/openbank.settlement.v1.SettlementService/GetPosition": lambda p: settlement_pb2.GetPositionRequest(
        participant=p.names["participant"], currency_code="EUR"
    ),
    "/openbank.settlement.v1.SettlementService/GetSettlementReport": lambda p: (
        settlement_pb2.GetSettlementReportRequest(window=p.names["window"])
    ),
    "/openbank.settlement.v1.SettlementService/ListSettlementWindows": lambda p: (
        settlement_pb2.ListSettlementWindowsRequest(currency_code="EUR")
    ),
}


def _string_paths(message_type: descriptor.Descriptor) -> Iterator[tuple[descriptor.FieldDescriptor, ...]]:
    """Every string field of a request, as the path of fields that leads to it."""
    for field in message_type.fields:
        if field.type == descriptor.FieldDescriptor.TYPE_STRING:
            yield (field,)
        elif field.type == descriptor.FieldDescriptor.TYPE_MESSAGE:
            for inner in _string_paths(field.message_type):
                yield (field, *inner)


def _request_type(path: str) -> descriptor.Descriptor:
    return descriptor_pool.Default().FindMessageTypeByName(PUBLIC[path].input_type)


# (rpc, the dotted path of one string field of its request), for every public rpc.
FIELDS = [
    (path, ".".join(field.name for field in fields))
    for path in sorted(PUBLIC)
    for fields in _string_paths(_request_type(path))
]


def _fields_at(path: str, dotted: str) -> tuple[descriptor.FieldDescriptor, ...]:
    message_type, fields = _request_type(path), []
    for name in dotted.split("."):
        field = message_type.fields_by_name[name]
        fields.append(field)
        message_type = field.message_type
    return tuple(fields)


def test_every_public_rpc_has_a_valid_request_here() -> None:
    assert set(VALID) == set(PUBLIC)
    assert len(FIELDS) > 30


# ---- raw bytes on the wire -------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_delimited(field: descriptor.FieldDescriptor, payload: bytes) -> bytes:
    return _varint(field.number << 3 | 2) + _varint(len(payload)) + payload


def with_raw_value(request: Message, fields: tuple[descriptor.FieldDescriptor, ...], raw: bytes) -> bytes:
    """The request's bytes with ``raw`` as the value of the string field at ``fields``."""
    payload = _length_delimited(fields[-1], raw)
    for outer in reversed(fields[:-1]):
        payload = _length_delimited(outer, payload)
    return request.SerializeToString() + payload


def _identity(data: bytes) -> bytes:
    return data


async def answer(partner: Partner, path: str, body: bytes) -> tuple[str, ...]:
    """What the gateway answered: the status, the reason and the fields a BadRequest names."""
    policy = PUBLIC[path]
    metadata = partner.metadata(policy)
    try:
        if policy.server_streaming:
            call = partner.channel.unary_stream(path, request_serializer=_identity, response_deserializer=_identity)(
                body, metadata=metadata, timeout=10
            )
            try:
                await asyncio.wait_for(call.read(), 0.5)
            except TimeoutError:
                pass  # open and waiting for events: accepted
            finally:
                call.cancel()
        else:
            await partner.channel.unary_unary(path, request_serializer=_identity, response_deserializer=_identity)(
                body, metadata=metadata, timeout=10
            )
    except grpc.aio.AioRpcError as error:
        status = decode_status(error.trailing_metadata())
        info = error_info(status)
        fields: list[str] = []
        if status is not None:
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad = error_details_pb2.BadRequest()
                    detail.Unpack(bad)
                    fields = sorted(v.field for v in bad.field_violations)
        return (error.code().name, info.reason if info else "", *fields)
    return ("OK",)


# ---- the generated values --------------------------------------------------------------

CONTROLS = [chr(c) for c in (*range(0x00, 0x20), 0x7F, 0x85, 0x9F)] + ["\u2028", "\u202e", "\u2066", "\ufeff"]
plain = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20)


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


values = st.one_of(
    st.text(max_size=40).map(_text),  # any Unicode text, mostly printable
    st.builds(lambda a, c, b: _text(a + c + b), plain, st.sampled_from(CONTROLS), plain),  # a control character
    st.builds(lambda a, b: _text(f"{a}\ud800{b}"), plain, plain),  # a lone surrogate (invalid UTF-8 on the wire)
    st.binary(max_size=16),  # any bytes
    st.builds(lambda c, n: _text(c * n), st.sampled_from(["x", "é", "€", "\U0001f600"]), st.integers(36, 20_000)),
)


@pytest.mark.parametrize(("path", "field"), FIELDS, ids=[f"{p.rsplit('/', 1)[1]}.{f}" for p, f in FIELDS])
@settings(
    max_examples=5,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=values)
@example(raw=b"a\x00b")
@example(raw=b"x" * 5000)
@example(raw=_text("a\udc80b"))
def test_no_text_reaches_a_store_it_cannot_go_into(meshes: Meshes, path: str, field: str, raw: bytes) -> None:
    fields = _fields_at(path, field)

    async def both() -> tuple[tuple[str, ...], tuple[str, ...]]:
        return await asyncio.gather(
            answer(meshes.sqlite, path, with_raw_value(VALID[path](meshes.sqlite), fields, raw)),
            answer(meshes.postgresql, path, with_raw_value(VALID[path](meshes.postgresql), fields, raw)),
        )

    on_sqlite, on_postgresql = meshes.loop.run_until_complete(both())
    assert on_sqlite[0] not in ("INTERNAL", "UNKNOWN"), on_sqlite
    assert on_postgresql[0] not in ("INTERNAL", "UNKNOWN"), on_postgresql
    assert on_sqlite == on_postgresql
