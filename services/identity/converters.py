"""Protobuf <-> domain conversions for identity (no rules here)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from google.protobuf import timestamp_pb2

from meshlib.mandates import enum_suffix, mandate_message
from meshlib.money import Amount
from meshlib.names import parse_name
from openbank.common.v1 import consent_permission_pb2, mandate_period_pb2, money_pb2
from openbank.identity.v1 import consent_pb2, customer_pb2, partner_pb2, signing_key_pb2, token_pb2
from services.identity.domain.consents import Consent, ConsentNarrowing, ConsentRequest
from services.identity.domain.customers import Customer
from services.identity.domain.keys import SigningKey
from services.identity.domain.mandates import MandateRequest, PeriodicLimitRequest
from services.identity.domain.partners import AuthMethod, Partner, PartnerChanges, PartnerRegistration
from services.identity.token_service import ClientCredentials, Introspection, TokenRequest

_PERMISSION = consent_permission_pb2.ConsentPermission
_GRANT_TYPES = {
    token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS: "client_credentials",
    token_pb2.GRANT_TYPE_AUTHORIZATION_CODE: "authorization_code",
    token_pb2.GRANT_TYPE_REFRESH_TOKEN: "refresh_token",
    token_pb2.GRANT_TYPE_CIBA: "ciba",
}
_HINTS = {
    token_pb2.TOKEN_TYPE_HINT_ACCESS_TOKEN: "access_token",
    token_pb2.TOKEN_TYPE_HINT_REFRESH_TOKEN: "refresh_token",
}
_AUTH_METHODS = {
    partner_pb2.TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST: AuthMethod.CLIENT_SECRET_POST,
    partner_pb2.TOKEN_ENDPOINT_AUTH_METHOD_PRIVATE_KEY_JWT: AuthMethod.PRIVATE_KEY_JWT,
}
_AUTH_METHOD_NUMBERS = {method: number for number, method in _AUTH_METHODS.items()}
_PERIODS = {
    consent_pb2.CONSENT_PERIOD_DAY: "DAY",
    consent_pb2.CONSENT_PERIOD_WEEK: "WEEK",
    consent_pb2.CONSENT_PERIOD_MONTH: "MONTH",
}
_PERIOD_NUMBERS = {name: number for number, name in _PERIODS.items()}


# ---- shared pieces ----------------------------------------------------------------------


def timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    """A protobuf Timestamp, or None to leave the field unset."""
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp


def from_timestamp(message: Any, field: str) -> dt.datetime | None:
    """The datetime of a set Timestamp field, else None."""
    if not message.HasField(field):
        return None
    return getattr(message, field).ToDatetime(tzinfo=dt.UTC)


def money(amount: Amount | None) -> money_pb2.Money | None:
    """Money message, or None to leave the field unset."""
    return money_pb2.Money(currency_code=amount.currency, minor_units=amount.minor_units) if amount else None


def money_fields(message: Any, field: str) -> tuple[str, int] | None:
    """(currency, minor units) of a set Money field, else None (validated by the domain)."""
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    return value.currency_code, value.minor_units


def permission_names(values: Any) -> tuple[str, ...]:
    """ConsentPermission numbers -> names without the prefix (unknown numbers kept visible)."""
    names = []
    for value in values:
        name = _PERMISSION.Name(value) if value in _PERMISSION.values() else str(value)
        names.append(name.removeprefix("CONSENT_PERMISSION_"))
    return tuple(dict.fromkeys(names))


def account_ids(names: Any, field: str = "accounts") -> tuple[str, ...]:
    """`accounts/{id}` names -> ids (malformed names fail INVALID_ARGUMENT naming the field)."""
    return tuple(parse_name(name, "accounts", field) for name in names)


# ---- partners ---------------------------------------------------------------------------


def partner_message(partner: Partner) -> partner_pb2.Partner:
    """A Partner resource (never its secret hash)."""
    return partner_pb2.Partner(
        name=f"partners/{partner.partner_id}",
        client_id=partner.client_id,
        display_name=partner.display_name,
        status=partner_pb2.PartnerStatus.Value(f"PARTNER_STATUS_{partner.status.value}"),
        allowed_scopes=list(partner.allowed_scopes),
        rate_limit_tier=partner.rate_limit_tier,
        per_payment_limit=money(partner.per_payment_limit),
        daily_limit=money(partner.daily_limit),
        token_endpoint_auth_method=_AUTH_METHOD_NUMBERS[partner.auth_method],
        public_key_pem=partner.public_key_pem or "",
        tls_client_certificate_sha256=partner.tls_client_certificate_sha256 or "",
        create_time=timestamp(partner.created_at),
        update_time=timestamp(partner.updated_at),
        tls_client_certificate_bound_access_tokens=partner.certificate_bound_tokens,
        redirect_uris=list(partner.redirect_uris),
        risk_sharing=partner_pb2.RiskSharingAgreement(
            fraud_share_bps=partner.risk_sharing_bps[0],
            not_received_share_bps=partner.risk_sharing_bps[1],
            wrong_amount_share_bps=partner.risk_sharing_bps[2],
        ),
        risk_tier=partner_pb2.PartnerRiskTier.Value(f"PARTNER_RISK_TIER_{partner.risk_tier}"),
    )


def _risk_tier(value: int) -> str | None:
    """The tier's name (None: unspecified; an unknown number stays visible, for the field's error)."""
    if value == partner_pb2.PARTNER_RISK_TIER_UNSPECIFIED:
        return None
    names = {v.number: v.name for v in partner_pb2.PartnerRiskTier.DESCRIPTOR.values}
    return names[value].removeprefix("PARTNER_RISK_TIER_") if value in names else f"#{value}"


def _risk_sharing(agreement: partner_pb2.RiskSharingAgreement) -> tuple[int, int, int]:
    return (agreement.fraud_share_bps, agreement.not_received_share_bps, agreement.wrong_amount_share_bps)


def registration(request: partner_pb2.RegisterPartnerRequest) -> PartnerRegistration:
    """RegisterPartnerRequest -> domain registration."""
    return PartnerRegistration(
        display_name=request.display_name,
        allowed_scopes=tuple(request.allowed_scopes),
        rate_limit_tier=request.rate_limit_tier,
        per_payment_limit=money_fields(request, "per_payment_limit"),
        daily_limit=money_fields(request, "daily_limit"),
        auth_method=_AUTH_METHODS.get(request.token_endpoint_auth_method),
        public_key_pem=request.public_key_pem,
        tls_client_certificate_sha256=request.tls_client_certificate_sha256,
        certificate_bound_tokens=(
            request.tls_client_certificate_bound_access_tokens
            if request.HasField("tls_client_certificate_bound_access_tokens")
            else None
        ),
        redirect_uris=tuple(request.redirect_uris),
        risk_sharing_bps=_risk_sharing(request.risk_sharing),
        risk_tier=_risk_tier(request.risk_tier) or "LOW",
    )


def partner_changes(request: partner_pb2.UpdatePartnerRequest) -> PartnerChanges:
    """UpdatePartnerRequest -> the set fields only."""

    def optional(field: str) -> Any:
        return getattr(request, field) if request.HasField(field) else None

    return PartnerChanges(
        display_name=optional("display_name"),
        allowed_scopes=tuple(request.allowed_scopes.scopes) if request.HasField("allowed_scopes") else None,
        rate_limit_tier=optional("rate_limit_tier"),
        per_payment_limit=money_fields(request, "per_payment_limit"),
        daily_limit=money_fields(request, "daily_limit"),
        public_key_pem=optional("public_key_pem"),
        tls_client_certificate_sha256=optional("tls_client_certificate_sha256"),
        certificate_bound_tokens=optional("tls_client_certificate_bound_access_tokens"),
        redirect_uris=tuple(request.redirect_uris.redirect_uris) if request.HasField("redirect_uris") else None,
        risk_sharing_bps=_risk_sharing(request.risk_sharing) if request.HasField("risk_sharing") else None,
        risk_tier=_risk_tier(request.risk_tier),
    )


def partner_status_filter(value: int) -> str | None:
    """ListPartners' status filter (UNSPECIFIED = all)."""
    if value == partner_pb2.PARTNER_STATUS_UNSPECIFIED:
        return None
    return partner_pb2.PartnerStatus.Name(value).removeprefix("PARTNER_STATUS_")


# ---- customers --------------------------------------------------------------------------


def customer_message(customer: Customer) -> customer_pb2.Customer:
    """A Customer resource (never its credentials)."""
    return customer_pb2.Customer(
        name=f"customers/{customer.customer_id}",
        username=customer.username,
        display_name=customer.display_name,
        status=customer_pb2.CustomerStatus.Value(f"CUSTOMER_STATUS_{customer.status.value}"),
        create_time=timestamp(customer.created_at),
        update_time=timestamp(customer.updated_at),
    )


# ---- consents ---------------------------------------------------------------------------


def consent_message(consent: Consent) -> consent_pb2.Consent:
    """A Consent resource."""
    return consent_pb2.Consent(
        name=f"consents/{consent.consent_id}",
        partner=f"partners/{consent.partner_id}",
        customer=f"customers/{consent.customer_id}" if consent.customer_id else "",
        state=consent_pb2.ConsentState.Value(f"CONSENT_STATE_{consent.state.value}"),
        paused=consent.paused,
        permissions=[_PERMISSION.Value(f"CONSENT_PERMISSION_{p}") for p in sorted(consent.permissions)],
        accounts=[f"accounts/{a}" for a in consent.account_ids],
        expire_time=timestamp(consent.expires_at),
        per_payment_limit=money(consent.per_payment_limit),
        period_limit=money(consent.period_limit),
        period=_PERIOD_NUMBERS.get(consent.period or "", consent_pb2.CONSENT_PERIOD_UNSPECIFIED),
        reads_per_day=consent.reads_per_day,
        create_time=timestamp(consent.created_at),
        update_time=timestamp(consent.updated_at),
        authorise_time=timestamp(consent.authorised_at),
        mandate=mandate_message(consent.mandate) if consent.mandate else None,
    )


def consent_request(request: consent_pb2.CreateConsentRequest) -> ConsentRequest:
    """CreateConsentRequest -> domain request."""
    return ConsentRequest(
        permissions=permission_names(request.permissions),
        expires_at=from_timestamp(request, "expire_time"),
        per_payment_limit=money_fields(request, "per_payment_limit"),
        period_limit=money_fields(request, "period_limit"),
        period=_PERIODS.get(request.period),
        reads_per_day=request.reads_per_day,
        code_challenge=request.code_challenge,
        code_challenge_method=request.code_challenge_method,
        mandate=mandate_request(request.mandate) if request.HasField("mandate") else None,
    )


def mandate_request(message: consent_pb2.Mandate) -> MandateRequest:
    """A requested Mandate -> the domain's unvalidated request (names without prefixes)."""
    creditor = message.WhichOneof("creditor")
    name = getattr(message, creditor) if creditor else ""
    return MandateRequest(
        mandate_type=enum_suffix(consent_pb2.MandateType, message.type, "MANDATE_TYPE_"),
        creditor_account=_resource_id(name, "accounts/") if creditor == "creditor_account" else None,
        creditor_wallet=_resource_id(name, "partners/") if creditor == "creditor_wallet" else None,
        maximum_individual=money_fields(message, "maximum_individual_amount"),
        periodic_limits=tuple(
            PeriodicLimitRequest(
                period_type=enum_suffix(
                    mandate_period_pb2.MandatePeriodType, limit.period_type, "MANDATE_PERIOD_TYPE_"
                ),
                alignment=enum_suffix(
                    mandate_period_pb2.MandatePeriodAlignment, limit.period_alignment, "MANDATE_PERIOD_ALIGNMENT_"
                ),
                maximum=money_fields(limit, "maximum_amount"),
            )
            for limit in message.periodic_limits
        ),
        valid_from=from_timestamp(message, "valid_from_time"),
        valid_to=from_timestamp(message, "valid_to_time"),
    )


def _resource_id(name: str, prefix: str) -> str:
    """The id of ``prefix{id}``; a name without the prefix is kept whole (and then refused)."""
    return name[len(prefix) :] if name.startswith(prefix) else name


def consent_narrowing(request: consent_pb2.UpdateConsentLimitsRequest) -> ConsentNarrowing:
    """UpdateConsentLimitsRequest -> the set fields only."""
    return ConsentNarrowing(
        per_payment_limit=money_fields(request, "per_payment_limit"),
        period_limit=money_fields(request, "period_limit"),
        reads_per_day=request.reads_per_day if request.HasField("reads_per_day") else None,
        permissions=permission_names(request.permissions),
        account_ids=account_ids(request.accounts),
        expires_at=from_timestamp(request, "expire_time"),
    )


def consent_state_filter(value: int) -> str | None:
    """ListCustomerConsents' state filter (UNSPECIFIED = all)."""
    if value == consent_pb2.CONSENT_STATE_UNSPECIFIED:
        return None
    return consent_pb2.ConsentState.Name(value).removeprefix("CONSENT_STATE_")


# ---- tokens and keys --------------------------------------------------------------------


def client_credentials(request: Any, certificate_sha256: str | None) -> ClientCredentials:
    """The client authentication fields of IssueToken / RevokeToken."""
    return ClientCredentials(
        client_id=request.client_id,
        client_secret=request.client_secret,
        client_assertion=request.client_assertion,
        client_assertion_type=request.client_assertion_type,
        certificate_sha256=certificate_sha256,
    )


def token_request(request: token_pb2.IssueTokenRequest, certificate_sha256: str | None) -> TokenRequest:
    """IssueTokenRequest -> domain request."""
    grant_type = _GRANT_TYPES.get(request.grant_type)
    if grant_type is None and request.grant_type != token_pb2.GRANT_TYPE_UNSPECIFIED:
        grant_type = f"unknown:{request.grant_type}"  # set but not one we know: unsupported, not missing
    return TokenRequest(
        grant_type=grant_type,
        credentials=client_credentials(request, certificate_sha256),
        scopes=tuple(request.scopes),
        code=request.code,
        code_verifier=request.code_verifier,
        refresh_token=request.refresh_token,
        auth_req_id=request.auth_req_id,
    )


def token_hint(value: int) -> str | None:
    """RFC 7009 token_type_hint."""
    return _HINTS.get(value)


def introspection_response(answer: Introspection) -> token_pb2.IntrospectTokenResponse:
    """RFC 7662 answer; an inactive token gets active=false and, when its partner or consent
    is the cause, that partner status or consent state (nothing else)."""
    consent_state = consent_pb2.CONSENT_STATE_UNSPECIFIED
    if answer.consent_state:
        consent_state = consent_pb2.ConsentState.Value(f"CONSENT_STATE_{answer.consent_state}")
    partner_status = partner_pb2.PARTNER_STATUS_UNSPECIFIED
    if answer.partner_status:
        partner_status = partner_pb2.PartnerStatus.Value(f"PARTNER_STATUS_{answer.partner_status}")
    if not answer.active:
        return token_pb2.IntrospectTokenResponse(
            active=False,
            partner_status=partner_status,
            consent_state=consent_state,
            consent_paused=answer.consent_paused,
        )
    return token_pb2.IntrospectTokenResponse(
        active=True,
        client_id=answer.client_id,
        partner=f"partners/{answer.partner_id}" if answer.partner_id else "",
        scopes=list(answer.scopes),
        consent=f"consents/{answer.consent_id}" if answer.consent_id else "",
        consent_state=consent_state,
        consent_paused=answer.consent_paused,
        expire_time=timestamp(answer.expires_at),
        issue_time=timestamp(answer.issued_at),
        # RFC 7662 `sub`: the customer for a consent-bound token, the client otherwise.
        sub=f"customers/{answer.customer_id}"
        if answer.customer_id
        else (f"partners/{answer.partner_id}" if answer.partner_id else answer.subject),
        jti=answer.jti,
        partner_status=partner_status,
    )


def json_web_key(jwk: dict[str, Any]) -> token_pb2.JsonWebKey:
    """A public JWK message."""
    return token_pb2.JsonWebKey(
        kid=jwk["kid"], kty=jwk["kty"], crv=jwk["crv"], x=jwk["x"], y=jwk["y"], alg=jwk["alg"], use=jwk["use"]
    )


def jwks_response(key_set: dict[str, Any]) -> token_pb2.GetJwksResponse:
    """The JWKS as both typed keys and the raw JSON document."""
    return token_pb2.GetJwksResponse(
        keys=[json_web_key(k) for k in key_set["keys"]],
        jwks_json=json.dumps(key_set, separators=(",", ":")),
    )


def signing_key_message(key: SigningKey) -> signing_key_pb2.SigningKey:
    """A SigningKey resource (public part only)."""
    return signing_key_pb2.SigningKey(
        name=f"signingKeys/{key.kid}",
        kid=key.kid,
        state=signing_key_pb2.SigningKeyState.Value(f"SIGNING_KEY_STATE_{key.state.value}"),
        create_time=timestamp(key.created_at),
        retire_time=timestamp(key.retire_after) if key.state.value != "ACTIVE" else None,
        public_jwk=json_web_key(key.public_jwk),
    )
