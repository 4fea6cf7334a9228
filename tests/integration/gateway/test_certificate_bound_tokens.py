"""Certificate-bound access tokens (RFC 8705) through the real mesh over real TLS: identity,
account and the gateway, with partner mTLS at the gateway and mTLS between the processes.

A partner registered with a certificate gets tokens carrying ``cnf.x5t#S256``; the gateway
compares it with the partner's TLS session, each service again with the thumbprint the
gateway forwards. A stolen token is refused from another certificate at the gateway and at
a service called directly, whatever header the thief adds.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest

from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from meshlib.app import start_service
from meshlib.auth.certificates import FORWARDED_CERTIFICATE_HEADER, x5t_s256
from meshlib.auth.testing import NeverRevoked, TestIssuer
from meshlib.auth.verifier import static_jwks
from meshlib.grpc_errors import decode_status, error_info
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, account_pb2, account_pb2_grpc
from openbank.common.v1 import consent_permission_pb2
from openbank.identity.v1 import consent_pb2, consent_pb2_grpc, partner_pb2, token_pb2, token_pb2_grpc
from services.account.bootstrap import account_spec
from services.account.settings import AccountSettings
from services.identity.bootstrap import build_spec
from tests.integration.gateway.upstream import start_fake_upstream
from tests.integration.identity.harness import (
    INTERNAL_CLIENTS,
    SECRETS,
    Identity,
    Partner,
    ShiftableClock,
    bearer,
    identity_settings,
    pkce_pair,
    request_id,
)
from tests.support.pki import Issued, TestCa

GET_CONSENT = "/openbank.identity.v1.ConsentService/GetConsent"
ACCOUNT_SECRET = "account-secret-0123456789"
LEDGER_SECRET = "ops-ledger-secret-0123456789"
CLIENTS = [
    *INTERNAL_CLIENTS,
    {"client_id": "account", "secret": ACCOUNT_SECRET, "scopes": ["consents:read", "tokens:introspect"]},
    {"client_id": "ops-ledger", "secret": LEDGER_SECRET, "scopes": ["ledger:admin", "ledger:read"]},
]


@dataclass
class TlsMesh:
    identity: Identity  # its channel is the operator's (a mesh certificate named "ops")
    gateway_port: int
    account_port: int
    partner_ca: TestCa
    mesh_ca: TestCa
    wallet: Issued  # partner A's certificate
    thief: Issued  # another partner's certificate, from the same partner CA
    intruder: Issued  # a mesh certificate that is not the gateway's ("payment")

    def partner_channel(self, certificate: Issued) -> grpc.aio.Channel:
        """A partner's channel to the gateway, presenting ``certificate``."""
        credentials = grpc.ssl_channel_credentials(self.partner_ca.cert_pem, certificate.key_pem, certificate.cert_pem)
        return grpc.aio.secure_channel(f"127.0.0.1:{self.gateway_port}", credentials)

    def mesh_channel(self, port: int, certificate: Issued) -> grpc.aio.Channel:
        """A channel straight to a service, with a mesh certificate."""
        credentials = grpc.ssl_channel_credentials(self.mesh_ca.cert_pem, certificate.key_pem, certificate.cert_pem)
        return grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials)


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[TlsMesh]:
    mesh_ca, partner_ca = TestCa("mesh", tmp_path), TestCa("partners", tmp_path)
    identity_cert = mesh_ca.issue("identity", "identity", "127.0.0.1")
    account_cert = mesh_ca.issue("account", "account", "127.0.0.1")
    gateway_mesh_cert = mesh_ca.issue("gateway", "gateway")
    ops_cert = mesh_ca.issue("ops", "ops")
    gateway_public = partner_ca.issue("gateway-public", "127.0.0.1")

    def server_tls(certificate: Issued) -> dict[str, Any]:
        return {
            "tls_cert_file": certificate.cert_file,
            "tls_key_file": certificate.key_file,
            "tls_client_ca_file": mesh_ca.cert_file,
            "peer_tls_ca_file": mesh_ca.cert_file,
            "peer_tls_cert_file": certificate.cert_file,
            "peer_tls_key_file": certificate.key_file,
        }

    clock = ShiftableClock()
    settings = identity_settings(
        f"sqlite+aiosqlite:///{tmp_path / 'identity.db'}",
        internal_clients=json.dumps(CLIENTS),
        **server_tls(identity_cert),
    )
    identity_server = await start_service(build_spec(clock), settings)
    identity_target = f"127.0.0.1:{identity_server.port}"
    common = {
        "port": 0,
        "identity_target": identity_target,
        "token_issuer": settings.token_issuer,
        "token_audience": settings.token_audience,
    }
    account = await start_service(
        account_spec(),
        AccountSettings(
            **common,
            **server_tls(account_cert),
            service_name="account",
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'account.db'}",
            service_client_id="account",
            service_client_secret=ACCOUNT_SECRET,
        ),
    )
    account_target = f"127.0.0.1:{account.port}"
    gateway = await start_gateway(
        GatewaySettings(
            **common,
            account_target=account_target,
            payment_target=account_target,
            settlement_target=account_target,
            service_client_id="gateway",
            service_client_secret=SECRETS["gateway"],
            # Partner mTLS on the public port, the mesh certificate towards the services.
            tls_cert_file=gateway_public.cert_file,
            tls_key_file=gateway_public.key_file,
            tls_client_ca_file=partner_ca.cert_file,
            peer_tls_ca_file=mesh_ca.cert_file,
            peer_tls_cert_file=gateway_mesh_cert.cert_file,
            peer_tls_key_file=gateway_mesh_cert.key_file,
        )
    )
    operator = grpc.aio.secure_channel(
        identity_target, grpc.ssl_channel_credentials(mesh_ca.cert_pem, ops_cert.key_pem, ops_cert.cert_pem)
    )
    try:
        yield TlsMesh(
            Identity(identity_server, operator, settings, clock),
            gateway.port,
            account.port,
            partner_ca,
            mesh_ca,
            partner_ca.issue("wallet-a"),
            partner_ca.issue("wallet-b"),
            mesh_ca.issue("payment", "payment"),
        )
    finally:
        await operator.close()
        await gateway.stop(0)
        await account.stop(0)
        await identity_server.stop(0)


async def _refusal(call: Any) -> tuple[str, str]:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        info = error_info(decode_status(error.trailing_metadata()))
        return error.code().name, info.reason if info else ""
    raise AssertionError("the call succeeded")


def _cnf(token: str) -> dict[str, str] | None:
    return jwt.decode(token, options={"verify_signature": False}).get("cnf")


async def _client_token(channel: grpc.aio.Channel, partner: Partner, scopes: list[str]) -> str:
    answer = await token_pb2_grpc.TokenServiceStub(channel).IssueToken(
        token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
            client_id=partner.client_id,
            client_secret=partner.secret,
            scopes=scopes,
        ),
        timeout=10,
    )
    return answer.access_token


async def _open_account(mesh: TlsMesh, customer_name: str) -> str:
    """An account of the customer, opened by the operator straight at account."""
    async with mesh.mesh_channel(mesh.account_port, mesh.intruder) as channel:
        ops = await _client_token(
            mesh.identity.channel, Partner("", "ops-ledger", LEDGER_SECRET), ["ledger:admin", "ledger:read"]
        )
        answer = await account_admin_pb2_grpc.AccountAdminServiceStub(channel).OpenAccount(
            account_admin_pb2.OpenAccountRequest(
                request_id=request_id(),
                customer=customer_name,
                currency_code="EUR",
                type=account_pb2.ACCOUNT_TYPE_CURRENT,
                display_name="Everyday",
            ),
            metadata=bearer(ops),
            timeout=10,
        )
    return answer.account.name


async def _consent_token(mesh: TlsMesh, channel: grpc.aio.Channel, partner: Partner) -> tuple[str, str, str]:
    """Through the gateway on ``channel``: a consent, authorised by the customer at the bank,
    and the code exchanged. Returns (client token, consent-bound token, account name)."""
    client_token = await _client_token(channel, partner, ["consents:write", "consents:read"])
    verifier, challenge = pkce_pair()
    request = consent_pb2.CreateConsentRequest(
        request_id=request_id(),
        permissions=[
            consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS,
            consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES,
        ],
        code_challenge=challenge,
        code_challenge_method="S256",
        reads_per_day=100,
    )
    request.expire_time.FromDatetime(mesh.identity.clock() + dt.timedelta(days=1))
    consent = await consent_pb2_grpc.ConsentServiceStub(channel).CreateConsent(
        request, metadata=bearer(client_token), timeout=10
    )
    customer = await mesh.identity.create_customer()
    account = await _open_account(mesh, customer.name)
    authorised = await mesh.identity.authorise(consent.consent.name, customer, accounts=(account,))
    answer = await token_pb2_grpc.TokenServiceStub(channel).IssueToken(
        token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_AUTHORIZATION_CODE,
            client_id=partner.client_id,
            client_secret=partner.secret,
            code=authorised.authorization_code,
            code_verifier=verifier,
        ),
        timeout=10,
    )
    return client_token, answer.access_token, account


def _balance(channel: grpc.aio.Channel, token: str, account: str, *extra: tuple[str, str]) -> Any:
    return account_pb2_grpc.AccountServiceStub(channel).GetBalance(
        account_pb2.GetBalanceRequest(account=account),
        metadata=(*bearer(token), ("x-fapi-customer-ip-address", "198.51.100.7"), *extra),
        timeout=10,
    )


async def test_a_stolen_token_is_refused_from_another_certificate_at_the_gateway_and_at_each_service(
    mesh: TlsMesh,
) -> None:
    partner = await mesh.identity.register_partner(tls_client_certificate_sha256=mesh.wallet.sha256)
    async with mesh.partner_channel(mesh.wallet) as own:
        client_token, consent_token, account = await _consent_token(mesh, own, partner)
        # Issued through the gateway, which forwarded the partner's certificate to identity.
        assert _cnf(client_token) == _cnf(consent_token) == {"x5t#S256": x5t_s256(mesh.wallet.sha256)}
        # The rightful holder: the gateway and account both check, both pass.
        balance = await _balance(own, consent_token, account)
        assert balance.balance.account == account

    refused = ("UNAUTHENTICATED", "TOKEN_BINDING_MISMATCH")
    # At the gateway, from another partner's certificate (and a forged header changes nothing).
    async with mesh.partner_channel(mesh.thief) as stolen:
        forged = (FORWARDED_CERTIFICATE_HEADER, mesh.wallet.sha256)
        assert await _refusal(_balance(stolen, consent_token, account, forged)) == refused
        get_consent = consent_pb2_grpc.ConsentServiceStub(stolen).GetConsent(
            consent_pb2.GetConsentRequest(name=f"consents/{uuid.uuid4().hex}"), metadata=bearer(client_token)
        )
        assert await _refusal(get_consent) == refused

    # Straight at the services, from a mesh certificate that is not the gateway's, claiming
    # the partner's thumbprint in the header the gateway would set.
    forged_header = ((FORWARDED_CERTIFICATE_HEADER, mesh.wallet.sha256),)
    async with mesh.mesh_channel(mesh.account_port, mesh.intruder) as direct:
        assert await _refusal(_balance(direct, consent_token, account, *forged_header)) == refused
    async with mesh.mesh_channel(mesh.identity.server.port, mesh.intruder) as direct:
        get_consent = consent_pb2_grpc.ConsentServiceStub(direct).GetConsent(
            consent_pb2.GetConsentRequest(name=f"consents/{uuid.uuid4().hex}"),
            metadata=bearer(client_token) + forged_header,
        )
        assert await _refusal(get_consent) == refused
        # Nor does the forged header get the thief a token at identity's token endpoint.
        issue = token_pb2_grpc.TokenServiceStub(direct).IssueToken(
            token_pb2.IssueTokenRequest(
                grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                client_id=partner.client_id,
                client_secret=partner.secret,
                scopes=["consents:read"],
            ),
            metadata=forged_header,
        )
        assert await _refusal(issue) == ("UNAUTHENTICATED", "CLIENT_CERTIFICATE_MISMATCH")


async def test_registration_says_whether_tokens_are_bound(mesh: TlsMesh) -> None:
    bearer_partner = await mesh.identity.register_partner(
        tls_client_certificate_sha256=mesh.wallet.sha256, tls_client_certificate_bound_access_tokens=False
    )
    bound_partner = await mesh.identity.register_partner(tls_client_certificate_sha256=mesh.thief.sha256)
    admin = await mesh.identity.admin()
    shown = await mesh.identity.partners.GetPartner(
        partner_pb2.GetPartnerRequest(name=bearer_partner.name), metadata=admin
    )
    assert shown.partner.tls_client_certificate_bound_access_tokens is False
    async with mesh.partner_channel(mesh.wallet) as channel:
        token = await _client_token(channel, bearer_partner, ["consents:read"])
    assert _cnf(token) is None  # a bearer token, as registered

    # The operator turns binding on: the next token is bound.
    updated = await mesh.identity.partners.UpdatePartner(
        partner_pb2.UpdatePartnerRequest(
            request_id=request_id(), name=bearer_partner.name, tls_client_certificate_bound_access_tokens=True
        ),
        metadata=admin,
    )
    assert updated.partner.tls_client_certificate_bound_access_tokens is True
    async with mesh.partner_channel(mesh.wallet) as channel:
        token = await _client_token(channel, bearer_partner, ["consents:read"])
    assert _cnf(token) == {"x5t#S256": x5t_s256(mesh.wallet.sha256)}

    # Binding needs a certificate; the default follows whether one is registered.
    assert await _refusal(
        mesh.identity.partners.RegisterPartner(
            partner_pb2.RegisterPartnerRequest(
                request_id=request_id(),
                display_name="Wallet",
                allowed_scopes=["consents:read"],
                rate_limit_tier="gold",
                token_endpoint_auth_method=partner_pb2.TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST,
                tls_client_certificate_bound_access_tokens=True,
            ),
            metadata=admin,
        )
    ) == ("INVALID_ARGUMENT", "FIELD_INVALID")
    shown = await mesh.identity.partners.GetPartner(
        partner_pb2.GetPartnerRequest(name=bound_partner.name), metadata=admin
    )
    assert shown.partner.tls_client_certificate_bound_access_tokens is True
    plain = await mesh.identity.register_partner()
    shown = await mesh.identity.partners.GetPartner(partner_pb2.GetPartnerRequest(name=plain.name), metadata=admin)
    assert shown.partner.tls_client_certificate_bound_access_tokens is False


async def test_a_bound_token_without_a_client_certificate_never_passes_the_gateway(tmp_path: Path) -> None:
    # A gateway that does not ask partners for certificates (TLS only, as in a local run):
    # a bound token cannot be used there, and a partner's copy of the forwarded header never
    # reaches a service.
    partner_ca = TestCa("partners", tmp_path)
    public = partner_ca.issue("gateway-public", "127.0.0.1")
    issuer = TestIssuer()
    upstream_server, upstream_port, upstream = await start_fake_upstream()
    target = f"127.0.0.1:{upstream_port}"
    gateway = await start_gateway(
        GatewaySettings(
            port=0,
            identity_target=target,
            account_target=target,
            payment_target=target,
            settlement_target=target,
            token_issuer=issuer.issuer,
            token_audience=issuer.audience,
            tls_cert_file=public.cert_file,
            tls_key_file=public.key_file,
        ),
        jwks_fetcher=static_jwks(issuer.jwks),
        revocation=NeverRevoked(),  # no identity here
    )
    forged = ((FORWARDED_CERTIFICATE_HEADER, "ab" * 32),)
    try:
        credentials = grpc.ssl_channel_credentials(partner_ca.cert_pem)
        async with grpc.aio.secure_channel(f"127.0.0.1:{gateway.port}", credentials) as channel:
            stub = consent_pb2_grpc.ConsentServiceStub(channel)
            request = consent_pb2.GetConsentRequest(name=f"consents/{uuid.uuid4().hex}")
            bound = issuer.token("p1", scopes=["consents:read"], partner_id="p1", cnf={"x5t#S256": x5t_s256("ab" * 32)})
            refused = await _refusal(stub.GetConsent(request, metadata=bearer(bound) + forged, timeout=10))
            assert refused == ("UNAUTHENTICATED", "TOKEN_BINDING_MISMATCH")
            assert upstream.calls == []
            unbound = issuer.token("p1", scopes=["consents:read"], partner_id="p1")
            await channel.unary_unary(GET_CONSENT)(request.SerializeToString(), metadata=bearer(unbound) + forged)
        (seen,) = upstream.calls
        assert FORWARDED_CERTIFICATE_HEADER not in seen.metadata
    finally:
        await gateway.stop(0)
        await upstream_server.stop(0)
