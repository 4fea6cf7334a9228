"""Every service enforces every revocation itself, for calls that never pass the gateway:
identity, account, payment and settlement run with their real wiring (service credentials,
the shared verifier and revocation cache), on the embedded default (each process on its own
bus, so only introspection tells them) and on one Redis bus. A revoked token sent straight to
each is refused within a second, a suspended partner and a revoked consent with their own
reasons; an open WatchPayments at the payment service ends too, and one without
``payments:read`` never opens."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from meshlib.app import RunningService, start_service
from meshlib.grpc_errors import decode_status, error_info
from openbank.account.v1 import account_pb2, account_pb2_grpc
from openbank.common.v1 import consent_permission_pb2
from openbank.identity.v1 import consent_pb2, partner_pb2, token_pb2
from openbank.payment.v1 import payment_pb2, payment_pb2_grpc
from openbank.settlement.v1 import settlement_pb2, settlement_pb2_grpc
from services.account.bootstrap import account_spec
from services.account.settings import AccountSettings
from services.payment.bootstrap import SERVICE_SCOPES as PAYMENT_SCOPES
from services.payment.bootstrap import payment_spec
from services.payment.settings import PaymentSettings
from services.settlement.bootstrap import SERVICE_SCOPES as SETTLEMENT_SCOPES
from services.settlement.bootstrap import SPEC as SETTLEMENT_SPEC
from services.settlement.settings import SettlementSettings
from tests.integration.identity.harness import (
    Identity,
    Partner,
    bearer,
    pkce_pair,
    request_id,
    start_identity,
    stop_identity,
    with_clients,
)

SERVICE_CLIENTS = {
    "account": ["consents:read", "tokens:introspect"],
    "payment": PAYMENT_SCOPES,
    "settlement": SETTLEMENT_SCOPES,
}
PARTNER_SCOPES = (
    "consents:read",
    "consents:write",
    "accounts:read",
    "payments:write",
    "payments:read",
    "settlement:read",
)


def _secret(name: str) -> str:
    return f"{name}-secret-0123456789"


@dataclass
class Mesh:
    identity: Identity
    channels: dict[str, grpc.aio.Channel]


@pytest.fixture(params=["embedded", "redis"])
async def mesh(request, tmp_path: Path, key_prefix: str) -> AsyncIterator[Mesh]:  # type: ignore[no-untyped-def]
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    bus = {"redis_url": redis_url, "invalidation_channel": f"{key_prefix}invalidations"}
    clients = with_clients(
        *({"client_id": name, "secret": _secret(name), "scopes": scopes} for name, scopes in SERVICE_CLIENTS.items())
    )
    identity = await start_identity(
        f"sqlite+aiosqlite:///{tmp_path / 'identity.db'}", internal_clients=json.dumps(clients), **bus
    )
    servers: list[RunningService[Any]] = []
    channels = {"identity": identity.channel}
    try:
        for name, spec, settings_class in (
            ("account", account_spec(), AccountSettings),
            ("payment", payment_spec(), PaymentSettings),
            ("settlement", SETTLEMENT_SPEC, SettlementSettings),
        ):
            settings = settings_class(
                port=0,
                service_name=name,
                database_url=f"sqlite+aiosqlite:///{tmp_path / f'{name}.db'}",
                identity_target=f"127.0.0.1:{identity.server.port}",
                token_issuer=identity.settings.token_issuer,
                token_audience=identity.settings.token_audience,
                service_client_id=name,
                service_client_secret=_secret(name),
                allow_dev_secrets=True,
                **bus,
            )
            servers.append(await start_service(spec, settings))
            channels[name] = grpc.aio.insecure_channel(f"127.0.0.1:{servers[-1].port}")
        yield Mesh(identity, channels)
    finally:
        for name, channel in channels.items():
            if name != "identity":
                await channel.close()
        for server in servers:
            await server.stop(0)
        await stop_identity(identity)


def _outcome(error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
    info = error_info(decode_status(error.trailing_metadata()))
    return error.code(), info.reason if info else ""


@dataclass
class Wallet:
    partner: Partner
    bound: str  # consent-bound: accounts:read, payments:read, payments:write
    consent: str
    wide: str  # client credentials: consents:read, settlement:read


async def _wallet(identity: Identity) -> Wallet:
    partner = await identity.register_partner(PARTNER_SCOPES)
    verifier, challenge = pkce_pair()
    consent = await identity.create_consent(
        partner,
        challenge,
        permissions=(
            consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS,
            consent_permission_pb2.CONSENT_PERMISSION_INITIATE_PAYMENTS,
        ),
    )
    authorised = await identity.authorise(consent.name, await identity.create_customer())
    bound = (await identity.exchange(partner, authorised.authorization_code, verifier)).access_token
    wide = await identity.client_token(partner, ("consents:read", "settlement:read"))
    return Wallet(partner, bound, consent.name, wide)


Call = Callable[[Mesh, Wallet], Awaitable[Any]]

CALLS: dict[str, tuple[str, Call]] = {
    # service: (which token the call carries, the call)
    "identity": (
        "wide",
        lambda mesh, w: mesh.identity.consents.GetConsent(
            consent_pb2.GetConsentRequest(name=w.consent), metadata=bearer(w.wide)
        ),
    ),
    "account": (
        "bound",
        lambda mesh, w: account_pb2_grpc.AccountServiceStub(mesh.channels["account"]).ListAccounts(
            account_pb2.ListAccountsRequest(), metadata=bearer(w.bound)
        ),
    ),
    "payment": (
        "bound",
        lambda mesh, w: payment_pb2_grpc.PaymentServiceStub(mesh.channels["payment"]).ListPayments(
            payment_pb2.ListPaymentsRequest(), metadata=bearer(w.bound)
        ),
    ),
    "settlement": (
        "wide",
        lambda mesh, w: settlement_pb2_grpc.SettlementServiceStub(mesh.channels["settlement"]).ListSettlementWindows(
            settlement_pb2.ListSettlementWindowsRequest(), metadata=bearer(w.wide)
        ),
    ),
}


async def _refused_within(call: Callable[[], Awaitable[Any]], seconds: float) -> tuple[grpc.StatusCode, str, float]:
    """The refusal, and when the refused call was sent (seconds after the change): the bound is
    on what is sent after it, not on how long a loaded machine takes to answer."""
    started = time.monotonic()
    while True:
        sent = time.monotonic() - started
        try:
            await call()
        except grpc.aio.AioRpcError as error:
            code, reason = _outcome(error)
            if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
                return code, reason, sent
            raise
        if sent > seconds:
            raise AssertionError(f"a call sent {sent:.2f}s after the change was still served")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("service", list(CALLS))
async def test_a_revoked_token_sent_straight_to_the_service_is_refused(mesh: Mesh, service: str) -> None:
    wallet = await _wallet(mesh.identity)
    which, call = CALLS[service]
    await call(mesh, wallet)  # accepted (and every cache warm) before the revocation
    token = getattr(wallet, which)
    await mesh.identity.tokens.RevokeToken(
        token_pb2.RevokeTokenRequest(
            client_id=wallet.partner.client_id, client_secret=wallet.partner.secret, token=token
        )
    )
    code, reason, elapsed = await _refused_within(lambda: call(mesh, wallet), 1.0)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED") and elapsed < 1.0


@pytest.mark.parametrize("service", list(CALLS))
async def test_a_suspended_partner_is_refused_by_the_service_with_its_reason(mesh: Mesh, service: str) -> None:
    wallet = await _wallet(mesh.identity)
    _, call = CALLS[service]
    await call(mesh, wallet)
    await mesh.identity.partners.SuspendPartner(
        partner_pb2.SuspendPartnerRequest(request_id=request_id(), name=wallet.partner.name),
        metadata=await mesh.identity.admin(),
    )
    code, reason, elapsed = await _refused_within(lambda: call(mesh, wallet), 1.0)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "PARTNER_SUSPENDED") and elapsed < 1.0


@pytest.mark.parametrize("service", ["account", "payment"])
async def test_a_revoked_consent_is_refused_by_the_service_with_its_reason(mesh: Mesh, service: str) -> None:
    wallet = await _wallet(mesh.identity)
    _, call = CALLS[service]
    await call(mesh, wallet)
    await mesh.identity.consents.RevokeConsent(
        consent_pb2.RevokeConsentRequest(request_id=request_id(), name=wallet.consent),
        metadata=bearer(await mesh.identity.client_token(wallet.partner)),
    )
    code, reason, elapsed = await _refused_within(lambda: call(mesh, wallet), 1.0)
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "CONSENT_REVOKED") and elapsed < 1.0


async def test_an_open_stream_at_the_payment_service_ends_when_its_token_is_revoked(mesh: Mesh) -> None:
    wallet = await _wallet(mesh.identity)
    stream = payment_pb2_grpc.PaymentServiceStub(mesh.channels["payment"]).WatchPayments(
        payment_pb2.WatchPaymentsRequest(), metadata=bearer(wallet.bound)
    )
    await asyncio.sleep(0.3)  # open and idle (no payments): nothing but the watch can end it
    assert not stream.done()
    await mesh.identity.tokens.RevokeToken(
        token_pb2.RevokeTokenRequest(
            client_id=wallet.partner.client_id, client_secret=wallet.partner.secret, token=wallet.bound
        )
    )
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        await asyncio.wait_for(stream.read(), 1.5)
    assert _outcome(ended.value) == (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_REVOKED")
    assert time.monotonic() - started < 1.0


async def test_a_stream_without_its_scope_never_opens_at_the_payment_service(mesh: Mesh) -> None:
    wallet = await _wallet(mesh.identity)  # ``wide`` lacks payments:read
    stream = payment_pb2_grpc.PaymentServiceStub(mesh.channels["payment"]).WatchPayments(
        payment_pb2.WatchPaymentsRequest(), metadata=bearer(wallet.wide)
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await asyncio.wait_for(stream.read(), 2)
    assert _outcome(refused.value) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")


@pytest.mark.parametrize("service", ["account", "payment", "settlement"])
async def test_a_service_without_credentials_to_ask_identity_accepts_no_token(
    mesh: Mesh, service: str, tmp_path: Path
) -> None:
    """Misconfigured (no service client secret), a service cannot learn of revocations: it
    fails closed, never serving a token it cannot check."""
    wallet = await _wallet(mesh.identity)
    spec, settings_class = {
        "account": (account_spec(), AccountSettings),
        "payment": (payment_spec(), PaymentSettings),
        "settlement": (SETTLEMENT_SPEC, SettlementSettings),
    }[service]
    settings = settings_class(
        port=0,
        service_name=service,
        database_url=f"sqlite+aiosqlite:///{tmp_path / f'{service}-bare.db'}",
        identity_target=f"127.0.0.1:{mesh.identity.server.port}",
        token_issuer=mesh.identity.settings.token_issuer,
        token_audience=mesh.identity.settings.token_audience,
        allow_dev_secrets=True,
    )
    server = await start_service(spec, settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        _, call = CALLS[service]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(Mesh(mesh.identity, {**mesh.channels, service: channel}), wallet)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close()
        await server.stop(0)
