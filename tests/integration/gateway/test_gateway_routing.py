"""The gateway's route table comes from the contract, and upstream errors pass through it
unchanged (status, details, ErrorInfo)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.routing import build_routes
from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from meshlib.auth.consent import ConsentView
from meshlib.auth.testing import NeverRevoked, TestIssuer
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
        revocation=NeverRevoked(),  # no identity here
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


async def _reflect(channel: grpc.aio.Channel, request: reflection_pb2.ServerReflectionRequest) -> Any:
    responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(iter([request]))
    async for response in responses:
        return response
    raise AssertionError("reflection answered nothing")


async def test_reflection_describes_the_routed_rpcs_and_nothing_internal(gateway_channel) -> None:  # type: ignore[no-untyped-def]
    channel, _, _ = gateway_channel
    routes = build_routes()
    listed = await _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {service.name for service in listed.list_services_response.service}
    assert {route.policy.service for route in routes.values()} | {"grpc.health.v1.Health"} <= names
    described: set[str] = set()
    for service_name in names - {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}:
        answer = await _reflect(channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=service_name))
        for raw in answer.file_descriptor_response.file_descriptor_proto:
            file = descriptor_pb2.FileDescriptorProto.FromString(raw)
            described |= {f"/{file.package}.{s.name}/{m.name}" for s in file.service for m in s.method}
    # ConsentService and TokenService carry internal rpcs beside their public ones in the contract.
    assert described == set(routes)
    assert "/openbank.identity.v1.ConsentService/AuthoriseConsent" not in described
    assert "/openbank.identity.v1.TokenService/IntrospectToken" not in described
    # An internal service is not described at all; the messages of the files stay.
    missing = await _reflect(
        channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol="openbank.settlement.v1.PositionService")
    )
    assert missing.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    message = await _reflect(
        channel,
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="openbank.identity.v1.CreateConsentRequest"),
    )
    assert message.file_descriptor_response.file_descriptor_proto
