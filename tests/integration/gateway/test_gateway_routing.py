"""The gateway over real gRPC: routes exactly the public rpcs, hides internal ones, forwards
raw bytes with the token, and relays upstream errors unchanged."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from gateway.routing import build_routes
from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from meshlib.app import start_service
from meshlib.auth.testing import TestIssuer
from meshlib.auth.verifier import static_jwks
from meshlib.grpc_errors import decode_rpc_error
from meshlib.money import Amount
from meshlib.server import INTERACTION_ID_HEADER
from openbank.payment.v1 import payment_admin_pb2, payment_admin_pb2_grpc, payment_pb2, payment_pb2_grpc
from services.payment.bootstrap import SPEC as PAYMENT
from services.payment.domain.payments import Payment, PaymentState
from services.payment.settings import PaymentSettings
from services.payment.unit_of_work import PaymentUnitOfWork

BRIEF_PUBLIC_RPCS = {
    "IssueToken",
    "CreateConsent",
    "GetConsent",
    "RevokeConsent",
    "GetJwks",
    "ListAccounts",
    "GetAccount",
    "GetBalance",
    "ListTransactions",
    "ConfirmFunds",
    "CreatePayment",
    "GetPayment",
    "ListPayments",
    "CancelPayment",
    "WatchPayments",
    "GetPosition",
    "ListSettlementWindows",
    "GetSettlementReport",
}


def test_route_table_is_exactly_the_public_contract() -> None:
    routes = build_routes()
    names = {route.policy.method for route in routes.values()}
    assert BRIEF_PUBLIC_RPCS <= names
    assert all(route.policy.is_public for route in routes.values())
    assert "/openbank.account.v1.LedgerService/CreateTransfer" not in routes
    assert routes["/openbank.payment.v1.PaymentService/WatchPayments"].policy.server_streaming
    assert {route.upstream for route in routes.values()} == {"identity", "account", "payment", "settlement"}


@pytest.fixture
async def gateway_to_payment(sqlite_url: str):  # type: ignore[no-untyped-def]
    issuer = TestIssuer(issuer="https://identity.openbank.local", audience="openbank-mesh")
    payment = await start_service(
        PAYMENT, PaymentSettings(port=0, database_url=sqlite_url), jwks_fetcher=static_jwks(issuer.jwks)
    )
    now = dt.datetime.now(dt.UTC)
    async with PaymentUnitOfWork(payment.runtime.database) as uow:
        await uow.payments.add(
            Payment(
                "p-1", "wallet-a", "c1", "a1", "a2", None, Amount("EUR", 99), "TRANSFER", PaymentState.SETTLED, now, now
            )
        )
        await uow.commit()
    gateway = await start_gateway(
        GatewaySettings(
            port=0,
            payment_target=f"127.0.0.1:{payment.port}",
            identity_target="127.0.0.1:1",
            account_target="127.0.0.1:1",
            settlement_target="127.0.0.1:1",
        ),
        jwks_fetcher=static_jwks(issuer.jwks),
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
    try:
        yield channel, issuer, payment.port
    finally:
        await channel.close()
        await gateway.stop(0)
        await payment.stop(0)


def _as(issuer: TestIssuer, partner: str, scopes: list[str]) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {issuer.token(partner, scopes=scopes, partner_id=partner)}"),)


async def test_public_call_is_forwarded_with_its_token_and_an_interaction_id(gateway_to_payment) -> None:  # type: ignore[no-untyped-def]
    channel, issuer, _ = gateway_to_payment
    call = payment_pb2_grpc.PaymentServiceStub(channel).GetPayment(
        payment_pb2.GetPaymentRequest(name="payments/p-1"),
        metadata=(*_as(issuer, "wallet-a", ["payments:read"]), (INTERACTION_ID_HEADER, "ia-42")),
    )
    answer = await call
    assert answer.payment.amount.minor_units == 99
    assert dict(await call.initial_metadata())[INTERACTION_ID_HEADER] == "ia-42"


async def test_upstream_errors_pass_through_with_their_details(gateway_to_payment) -> None:  # type: ignore[no-untyped-def]
    channel, issuer, _ = gateway_to_payment
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await payment_pb2_grpc.PaymentServiceStub(channel).GetPayment(
            payment_pb2.GetPaymentRequest(name="payments/p-1"), metadata=_as(issuer, "wallet-b", ["payments:read"])
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert decode_rpc_error(raised.value).reason == "RESOURCE_NOT_FOUND"


async def test_the_gateway_refuses_before_routing(gateway_to_payment) -> None:  # type: ignore[no-untyped-def]
    channel, issuer, _ = gateway_to_payment
    stub = payment_pb2_grpc.PaymentServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetPayment(payment_pb2.GetPaymentRequest(name="payments/p-1"))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetPayment(
            payment_pb2.GetPaymentRequest(name="payments/p-1"), metadata=_as(issuer, "wallet-a", ["accounts:read"])
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert decode_rpc_error(raised.value).reason == "INSUFFICIENT_SCOPE"


async def test_internal_rpcs_do_not_exist_at_the_gateway(gateway_to_payment) -> None:  # type: ignore[no-untyped-def]
    channel, issuer, payment_port = gateway_to_payment
    operator = (("authorization", f"Bearer {issuer.token('service:ops', scopes=['payments:admin'])}"),)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await payment_admin_pb2_grpc.PaymentAdminServiceStub(channel).ListStuckPayments(
            payment_admin_pb2.ListStuckPaymentsRequest(), metadata=operator
        )
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # ... while the payment service itself does answer it.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{payment_port}") as direct:
        await payment_admin_pb2_grpc.PaymentAdminServiceStub(direct).ListStuckPayments(
            payment_admin_pb2.ListStuckPaymentsRequest(), metadata=operator
        )
