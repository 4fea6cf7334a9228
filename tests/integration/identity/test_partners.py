"""PartnerService over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from openbank.common.v1 import money_pb2
from openbank.identity.v1 import partner_pb2, token_pb2
from tests.integration.identity.harness import Identity, bearer, failure, request_id

SECRET_POST = partner_pb2.TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST


def _registration(**fields: object) -> partner_pb2.RegisterPartnerRequest:
    values: dict[str, object] = {
        "request_id": request_id(),
        "display_name": "Acme Wallet",
        "allowed_scopes": ["consents:write"],
        "rate_limit_tier": "silver",
        "token_endpoint_auth_method": SECRET_POST,
    }
    values.update(fields)
    return partner_pb2.RegisterPartnerRequest(**values)  # type: ignore[arg-type]


async def test_register_returns_the_secret_once_and_replays_without_it(identity: Identity) -> None:
    admin = await identity.admin()
    request = _registration(
        per_payment_limit=money_pb2.Money(currency_code="EUR", minor_units=50_000),
        daily_limit=money_pb2.Money(currency_code="EUR", minor_units=500_000),
    )
    first = await identity.partners.RegisterPartner(request, metadata=admin)
    assert first.client_secret and first.partner.client_id
    assert first.partner.status == partner_pb2.PARTNER_STATUS_ACTIVE
    assert first.partner.per_payment_limit.minor_units == 50_000
    replay = await identity.partners.RegisterPartner(request, metadata=admin)
    assert replay.partner == first.partner and replay.client_secret == ""
    changed = partner_pb2.RegisterPartnerRequest()
    changed.CopyFrom(request)
    changed.display_name = "Other"
    assert await failure(identity.partners.RegisterPartner(changed, metadata=admin)) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    got = await identity.partners.GetPartner(partner_pb2.GetPartnerRequest(name=first.partner.name), metadata=admin)
    assert got.partner == first.partner


async def test_registration_rejects_bad_input_naming_the_field(identity: Identity) -> None:
    admin = await identity.admin()
    bad = [
        _registration(allowed_scopes=["ledger:write"]),
        _registration(allowed_scopes=["nope:read"]),
        _registration(allowed_scopes=[]),
        _registration(rate_limit_tier="diamond"),
        _registration(per_payment_limit=money_pb2.Money(currency_code="EUR", minor_units=0)),
        _registration(token_endpoint_auth_method=partner_pb2.TOKEN_ENDPOINT_AUTH_METHOD_UNSPECIFIED),
        _registration(
            token_endpoint_auth_method=partner_pb2.TOKEN_ENDPOINT_AUTH_METHOD_PRIVATE_KEY_JWT,
            public_key_pem="not a key",
        ),
        _registration(tls_client_certificate_sha256="XYZ"),
        _registration(request_id=""),
    ]
    for request in bad:
        assert await failure(identity.partners.RegisterPartner(request, metadata=admin)) == (
            grpc.StatusCode.INVALID_ARGUMENT,
            "FIELD_INVALID",
        ), request


async def test_admin_rpcs_need_the_admin_scope(identity: Identity) -> None:
    partner = await identity.register_partner()
    token = await identity.client_token(partner)
    assert await failure(identity.partners.RegisterPartner(_registration(), metadata=bearer(token))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "INSUFFICIENT_SCOPE",
    )
    assert await failure(identity.partners.RegisterPartner(_registration())) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "TOKEN_MISSING",
    )


async def test_suspend_reactivate_update_rotate_and_list(identity: Identity) -> None:
    admin = await identity.admin()
    partner = await identity.register_partner()
    suspended = await identity.partners.SuspendPartner(
        partner_pb2.SuspendPartnerRequest(request_id=request_id(), name=partner.name, reason="fraud check"),
        metadata=admin,
    )
    assert suspended.partner.status == partner_pb2.PARTNER_STATUS_SUSPENDED
    assert await failure(
        identity.partners.SuspendPartner(
            partner_pb2.SuspendPartnerRequest(request_id=request_id(), name=partner.name),
            metadata=admin,
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE_TRANSITION")
    reactivated = await identity.partners.ReactivatePartner(
        partner_pb2.ReactivatePartnerRequest(request_id=request_id(), name=partner.name), metadata=admin
    )
    assert reactivated.partner.status == partner_pb2.PARTNER_STATUS_ACTIVE
    updated = await identity.partners.UpdatePartner(
        partner_pb2.UpdatePartnerRequest(
            request_id=request_id(),
            name=partner.name,
            display_name="Renamed",
            rate_limit_tier="bronze",
            allowed_scopes=partner_pb2.ScopeSet(scopes=["consents:write", "payments:read"]),
        ),
        metadata=admin,
    )
    assert (updated.partner.display_name, updated.partner.rate_limit_tier) == ("Renamed", "bronze")
    assert list(updated.partner.allowed_scopes) == ["consents:write", "payments:read"]

    rotated = await identity.partners.RotateClientSecret(
        partner_pb2.RotateClientSecretRequest(request_id=request_id(), name=partner.name), metadata=admin
    )
    assert rotated.client_secret and rotated.client_secret != partner.secret
    old = token_pb2.IssueTokenRequest(
        grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
        client_id=partner.client_id,
        client_secret=partner.secret,
        scopes=["consents:write"],
    )
    assert await failure(identity.tokens.IssueToken(old)) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_CLIENT")
    old.client_secret = rotated.client_secret
    assert (await identity.tokens.IssueToken(old)).access_token

    for _ in range(2):
        await identity.register_partner()
    seen: list[str] = []
    token = ""
    while True:
        page = await identity.partners.ListPartners(
            partner_pb2.ListPartnersRequest(page_size=2, page_token=token), metadata=admin
        )
        seen.extend(p.name for p in page.partners)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 3 and len(set(seen)) == 3
    assert await failure(
        identity.partners.ListPartners(partner_pb2.ListPartnersRequest(page_size=-1), metadata=admin)
    ) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    assert await failure(
        identity.partners.GetPartner(partner_pb2.GetPartnerRequest(name="partners/missing"), metadata=admin)
    ) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")


async def test_private_key_jwt_partner_has_no_secret(identity: Identity) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    answer = await identity.partners.RegisterPartner(
        _registration(
            token_endpoint_auth_method=partner_pb2.TOKEN_ENDPOINT_AUTH_METHOD_PRIVATE_KEY_JWT, public_key_pem=pem
        ),
        metadata=await identity.admin(),
    )
    assert answer.client_secret == "" and answer.partner.public_key_pem == pem
    assert await failure(
        identity.partners.RotateClientSecret(
            partner_pb2.RotateClientSecretRequest(request_id=request_id(), name=answer.partner.name),
            metadata=await identity.admin(),
        )
    ) == (grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE_TRANSITION")


async def test_the_risk_sharing_agreement_is_registered_updated_and_checked(identity: Identity) -> None:
    admin = await identity.admin()
    agreement = partner_pb2.RiskSharingAgreement(fraud_share_bps=2500, wrong_amount_share_bps=10_000)
    first = await identity.partners.RegisterPartner(_registration(risk_sharing=agreement), metadata=admin)
    assert first.partner.risk_sharing == agreement
    changed = partner_pb2.RiskSharingAgreement(fraud_share_bps=5000)
    update = partner_pb2.UpdatePartnerRequest(request_id=request_id(), name=first.partner.name, risk_sharing=changed)
    assert (await identity.partners.UpdatePartner(update, metadata=admin)).partner.risk_sharing == changed
    got = await identity.partners.GetPartner(partner_pb2.GetPartnerRequest(name=first.partner.name), metadata=admin)
    assert got.partner.risk_sharing == changed
    too_much = partner_pb2.RiskSharingAgreement(not_received_share_bps=10_001)
    assert await failure(identity.partners.RegisterPartner(_registration(risk_sharing=too_much), metadata=admin)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )


async def test_the_risk_tier_is_registered_low_by_default_updated_and_checked(identity: Identity) -> None:
    admin = await identity.admin()
    plain = await identity.partners.RegisterPartner(_registration(), metadata=admin)
    assert plain.partner.risk_tier == partner_pb2.PARTNER_RISK_TIER_LOW
    high = await identity.partners.RegisterPartner(
        _registration(risk_tier=partner_pb2.PARTNER_RISK_TIER_HIGH), metadata=admin
    )
    assert high.partner.risk_tier == partner_pb2.PARTNER_RISK_TIER_HIGH
    unchanged = partner_pb2.UpdatePartnerRequest(
        request_id=request_id(), name=high.partner.name, display_name="Renamed"
    )
    assert (await identity.partners.UpdatePartner(unchanged, metadata=admin)).partner.risk_tier == (
        partner_pb2.PARTNER_RISK_TIER_HIGH
    )
    lowered = partner_pb2.UpdatePartnerRequest(
        request_id=request_id(), name=high.partner.name, risk_tier=partner_pb2.PARTNER_RISK_TIER_MEDIUM
    )
    await identity.partners.UpdatePartner(lowered, metadata=admin)
    got = await identity.partners.GetPartner(partner_pb2.GetPartnerRequest(name=high.partner.name), metadata=admin)
    assert got.partner.risk_tier == partner_pb2.PARTNER_RISK_TIER_MEDIUM
    assert await failure(identity.partners.RegisterPartner(_registration(risk_tier=7), metadata=admin)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "FIELD_INVALID",
    )
