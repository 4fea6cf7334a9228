"""The gateway's route table comes from the contract, and upstream errors pass through it
unchanged (status, details, ErrorInfo)."""

from __future__ import annotations

import grpc
import pytest

from gateway.routing import build_routes
from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from meshlib.auth.consent import ConsentView
from meshlib.auth.testing import TestIssuer
from meshlib.auth.verifier import static_jwks
from meshlib.grpc_errors import decode_rpc_error
from meshlib.server import INTERACTION_ID_HEADER
from openbank.payment.v1 import payment_pb2, payment_pb2_grpc
from tests.integration.gateway.upstream import start_fake_upstream
from tests.support.consents import consent_view

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


class AuthorisedConsents:
    """Every consent is authorised with every permission (the routing test is not about consents)."""

    async def get(self, consent_id: str, *, partner_id: str) -> ConsentView:
        return consent_view(consent_id=consent_id, partner_id=partner_id, customer_id="cu1")


@pytest.fixture
async def gateway_channel():  # type: ignore[no-untyped-def]
    issuer = TestIssuer(issuer="https://identity.openbank.local", audience="openbank-mesh")
    upstream_server, port, upstream = await start_fake_upstream()
    target = f"127.0.0.1:{port}"
    gateway = await start_gateway(
        GatewaySettings(
            port=0, identity_target=target, account_target=target, payment_target=target, settlement_target=target
        ),
        jwks_fetcher=static_jwks(issuer.jwks),
        consents=AuthorisedConsents(),
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
    try:
        yield channel, issuer, upstream
    finally:
        await channel.close()
        await gateway.stop(0)
        await upstream_server.stop(0)


async def test_upstream_errors_pass_through_with_their_details(gateway_channel) -> None:  # type: ignore[no-untyped-def]
    channel, issuer, upstream = gateway_channel
    token = issuer.token("wallet-a", scopes=["payments:read"], partner_id="wallet-a", consent_id="c1")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await payment_pb2_grpc.PaymentServiceStub(channel).GetPayment(
            payment_pb2.GetPaymentRequest(name="payments/p-1"), metadata=(("authorization", f"Bearer {token}"),)
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    failure = decode_rpc_error(raised.value)
    assert (failure.reason, failure.message) == ("RESOURCE_NOT_FOUND", "payment not found")
    assert upstream.calls[-1].method == "/openbank.payment.v1.PaymentService/GetPayment"
    # A relayed error still carries the answer's headers: the interaction id and the rate limit.
    headers = dict(raised.value.initial_metadata())
    assert headers[INTERACTION_ID_HEADER] == upstream.calls[-1].metadata[INTERACTION_ID_HEADER]
    assert "ratelimit-remaining" in headers
