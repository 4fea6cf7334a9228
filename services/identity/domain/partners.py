"""Partners: wallet providers registered as OAuth clients. Plain rules, no I/O."""

from __future__ import annotations

import datetime as dt
import enum
import re
import secrets
import uuid
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from meshlib.errors import FailedPrecondition, FieldCollector
from meshlib.money import Amount, amount_from_fields
from services.identity.domain.authorization import check_redirect_uris

# The scopes of the contract (see openbank/common/v1/options.proto).
PARTNER_SCOPES = frozenset(
    {
        "accounts:read",
        "funds:confirm",
        "payments:write",
        "payments:read",
        "consents:read",
        "consents:write",
        "settlement:read",
        "events:read",
        # Account opening for a new customer through the partner (OnboardingService).
        "customers:onboard",
        # Credit line offers under the customer's consent (openbank.credit.v1.CreditService).
        "credit:offer",
    }
)
INTERNAL_SCOPES = frozenset(
    {
        "ledger:write",
        "ledger:read",
        "ledger:admin",
        "settlement:write",
        "settlement:admin",
        "identity:admin",
        "consents:authorise",
        "tokens:introspect",
        "payments:admin",
        "audit:read",
        # Operator tiers below <resource>:admin (meshlib.auth.scopes): day-to-day actions, reads.
        "identity:monitor",
        "ledger:monitor",
        "payments:operate",
        "payments:monitor",
        "settlement:operate",
        "settlement:monitor",
        # The payment service's outbound clearing connector (the interbank scheme).
        "scheme:write",
        "scheme:read",
        "events:write",
    }
)
ALL_SCOPES = PARTNER_SCOPES | INTERNAL_SCOPES

_CERT_HASH = re.compile(r"^[0-9a-f]{64}$")


class PartnerStatus(enum.Enum):
    """Whether the partner may call the mesh."""

    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"


class AuthMethod(enum.Enum):
    """How the partner authenticates at the token endpoint (RFC 7591 names)."""

    CLIENT_SECRET_POST = "client_secret_post"
    PRIVATE_KEY_JWT = "private_key_jwt"


@dataclass(frozen=True)
class Partner:
    """A registered partner; ``client_secret_hash`` is an Argon2id PHC string, never the secret."""

    partner_id: str
    client_id: str
    display_name: str
    status: PartnerStatus
    allowed_scopes: tuple[str, ...]
    rate_limit_tier: str
    per_payment_limit: Amount | None
    daily_limit: Amount | None
    auth_method: AuthMethod
    public_key_pem: str | None
    client_secret_hash: str | None
    tls_client_certificate_sha256: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    # Tokens issued before this moment are dead (set on suspension; reactivation keeps it).
    tokens_valid_after: dt.datetime | None = None
    # Access tokens bound to tls_client_certificate_sha256 (RFC 8705 ``cnf``); needs one.
    certificate_bound_tokens: bool = False
    # Where the redirect flow may send the customer's browser back (compared exactly).
    redirect_uris: tuple[str, ...] = ()
    # The risk-sharing agreement: the partner's share of an accepted dispute's loss in basis
    # points, per category (fraud, not received, wrong amount).
    risk_sharing_bps: tuple[int, int, int] = (0, 0, 0)
    # The bank's assessment (RISK_TIERS): what payment's partner_risk_tier rules read.
    risk_tier: str = "LOW"

    @property
    def active(self) -> bool:
        """True when the partner may call the mesh."""
        return self.status is PartnerStatus.ACTIVE

    def suspend(self, now: dt.datetime) -> Partner:
        """Suspend; every token it holds stops working."""
        if self.status is PartnerStatus.SUSPENDED:
            raise FailedPrecondition(
                "the partner is already suspended", reason="INVALID_STATE_TRANSITION", metadata={"state": "SUSPENDED"}
            )
        return replace(self, status=PartnerStatus.SUSPENDED, updated_at=now, tokens_valid_after=now)

    def reactivate(self, now: dt.datetime) -> Partner:
        """Allow calls again; tokens from before the suspension stay dead."""
        if self.status is not PartnerStatus.SUSPENDED:
            raise FailedPrecondition(
                "the partner is not suspended", reason="INVALID_STATE_TRANSITION", metadata={"state": "ACTIVE"}
            )
        return replace(self, status=PartnerStatus.ACTIVE, updated_at=now)

    def with_secret_hash(self, secret_hash: str, now: dt.datetime) -> Partner:
        """Replace the client secret (client_secret_post partners only)."""
        if self.auth_method is not AuthMethod.CLIENT_SECRET_POST:
            raise FailedPrecondition(
                "the partner authenticates with private_key_jwt and has no client secret",
                reason="INVALID_STATE_TRANSITION",
            )
        return replace(self, client_secret_hash=secret_hash, updated_at=now)


@dataclass(frozen=True)
class PartnerRegistration:
    """What an operator asks for when registering a partner (unvalidated)."""

    display_name: str
    allowed_scopes: tuple[str, ...]
    rate_limit_tier: str
    per_payment_limit: tuple[str, int] | None
    daily_limit: tuple[str, int] | None
    auth_method: AuthMethod | None
    public_key_pem: str
    tls_client_certificate_sha256: str
    # None: bound exactly when a certificate is registered.
    certificate_bound_tokens: bool | None = None
    redirect_uris: tuple[str, ...] = ()
    risk_sharing_bps: tuple[int, int, int] = (0, 0, 0)
    risk_tier: str = "LOW"


@dataclass(frozen=True)
class PartnerChanges:
    """An update: None means "leave as is"; a zero limit amount means "remove"."""

    display_name: str | None = None
    allowed_scopes: tuple[str, ...] | None = None
    rate_limit_tier: str | None = None
    per_payment_limit: tuple[str, int] | None = None
    daily_limit: tuple[str, int] | None = None
    public_key_pem: str | None = None
    tls_client_certificate_sha256: str | None = None
    certificate_bound_tokens: bool | None = None
    redirect_uris: tuple[str, ...] | None = None
    risk_sharing_bps: tuple[int, int, int] | None = None
    risk_tier: str | None = None


# A partner's risk tiers, lowest first.
RISK_TIERS = ("LOW", "MEDIUM", "HIGH")
_BOUND_FIELD = "tls_client_certificate_bound_access_tokens"


def new_partner_id() -> str:
    """A fresh partner id (fits the AIP-122 id pattern)."""
    return uuid.uuid4().hex


def new_client_id() -> str:
    """A fresh, unguessable OAuth client id."""
    return "obc_" + secrets.token_hex(12)


def check_scopes(scopes: tuple[str, ...], field: str, errors: FieldCollector) -> None:
    """Partner scopes only, at least one, none unknown or internal."""
    if not scopes:
        errors.add(field, "at least one scope is required")
    for scope in scopes:
        if scope in INTERNAL_SCOPES:
            errors.add(field, f"{scope!r} is an internal scope and is never granted to a partner")
        elif scope not in PARTNER_SCOPES:
            errors.add(field, f"{scope!r} is not a known scope")


def check_display_name(name: str, field: str, errors: FieldCollector) -> None:
    """1..100 characters, not blank."""
    errors.check(0 < len(name.strip()) and len(name) <= 100, field, "must be 1..100 characters")


def check_public_key(pem: str, field: str, errors: FieldCollector) -> None:
    """A PEM SPKI public key: EC P-256, or RSA of at least 2048 bits."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        errors.add(field, "must be a PEM (SPKI) public key")
        return
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return
    errors.add(field, "must be an EC P-256 or RSA (>= 2048 bits) public key")


_RISK_SHARING_FIELDS = ("fraud_share_bps", "not_received_share_bps", "wrong_amount_share_bps")


def check_risk_sharing(shares: tuple[int, int, int], field: str, errors: FieldCollector) -> None:
    """Each share 0..10000 basis points."""
    for name, bps in zip(_RISK_SHARING_FIELDS, shares, strict=True):
        errors.check(0 <= bps <= 10_000, f"{field}.{name}", "must be 0..10000 basis points")


def check_limits(
    per_payment: tuple[str, int] | None,
    daily: tuple[str, int] | None,
    errors: FieldCollector,
    *,
    allow_zero: bool = False,
) -> tuple[Amount | None, Amount | None]:
    """Validate the two optional limits (positive, same currency)."""
    per_payment_amount = daily_amount = None
    if per_payment is not None:
        per_payment_amount = amount_from_fields(*per_payment, "per_payment_limit", errors, allow_zero=allow_zero)
    if daily is not None:
        daily_amount = amount_from_fields(*daily, "daily_limit", errors, allow_zero=allow_zero)
    if per_payment_amount and daily_amount and per_payment_amount.currency != daily_amount.currency:
        errors.add("daily_limit.currency_code", "must be the currency of per_payment_limit")
    return per_payment_amount, daily_amount


def register(
    request: PartnerRegistration,
    known_tiers: frozenset[str],
    now: dt.datetime,
    client_secret_hash: str | None,
) -> Partner:
    """A new ACTIVE partner from a validated registration (raises InvalidArgument naming every bad field)."""
    errors = FieldCollector()
    check_display_name(request.display_name, "display_name", errors)
    check_scopes(request.allowed_scopes, "allowed_scopes", errors)
    errors.check(request.rate_limit_tier in known_tiers, "rate_limit_tier", f"must be one of {sorted(known_tiers)}")
    per_payment, daily = check_limits(request.per_payment_limit, request.daily_limit, errors)
    if request.auth_method is None:
        errors.add("token_endpoint_auth_method", "required: client_secret_post or private_key_jwt")
    elif request.auth_method is AuthMethod.PRIVATE_KEY_JWT:
        check_public_key(request.public_key_pem, "public_key_pem", errors)
    elif request.public_key_pem:
        errors.add("public_key_pem", "must be empty for client_secret_post")
    if request.tls_client_certificate_sha256:
        errors.check(
            bool(_CERT_HASH.match(request.tls_client_certificate_sha256)),
            "tls_client_certificate_sha256",
            "must be 64 lower-case hex characters",
        )
    bound = request.certificate_bound_tokens
    if bound is None:
        bound = bool(request.tls_client_certificate_sha256)
    elif bound and not request.tls_client_certificate_sha256:
        errors.add(_BOUND_FIELD, "needs tls_client_certificate_sha256 (the certificate tokens are bound to)")
    redirect_uris = check_redirect_uris(request.redirect_uris, "redirect_uris", errors)
    check_risk_sharing(request.risk_sharing_bps, "risk_sharing", errors)
    errors.check(request.risk_tier in RISK_TIERS, "risk_tier", f"must be one of {list(RISK_TIERS)}")
    errors.raise_if_any()
    assert request.auth_method is not None
    uses_secret = request.auth_method is AuthMethod.CLIENT_SECRET_POST
    return Partner(
        partner_id=new_partner_id(),
        client_id=new_client_id(),
        display_name=request.display_name.strip(),
        status=PartnerStatus.ACTIVE,
        allowed_scopes=tuple(sorted(set(request.allowed_scopes))),
        rate_limit_tier=request.rate_limit_tier,
        per_payment_limit=per_payment,
        daily_limit=daily,
        auth_method=request.auth_method,
        public_key_pem=None if uses_secret else request.public_key_pem,
        client_secret_hash=client_secret_hash if uses_secret else None,
        tls_client_certificate_sha256=request.tls_client_certificate_sha256 or None,
        created_at=now,
        updated_at=now,
        certificate_bound_tokens=bound,
        redirect_uris=redirect_uris,
        risk_sharing_bps=request.risk_sharing_bps,
        risk_tier=request.risk_tier,
    )


def apply_changes(partner: Partner, changes: PartnerChanges, known_tiers: frozenset[str], now: dt.datetime) -> Partner:
    """The partner with ``changes`` applied (each validated; zero limits remove the limit)."""
    errors = FieldCollector()
    updated = partner
    if changes.display_name is not None:
        check_display_name(changes.display_name, "display_name", errors)
        updated = replace(updated, display_name=changes.display_name.strip())
    if changes.allowed_scopes is not None:
        check_scopes(changes.allowed_scopes, "allowed_scopes.scopes", errors)
        updated = replace(updated, allowed_scopes=tuple(sorted(set(changes.allowed_scopes))))
    if changes.rate_limit_tier is not None:
        errors.check(changes.rate_limit_tier in known_tiers, "rate_limit_tier", f"must be one of {sorted(known_tiers)}")
        updated = replace(updated, rate_limit_tier=changes.rate_limit_tier)
    per_payment, daily = check_limits(changes.per_payment_limit, changes.daily_limit, errors, allow_zero=True)
    if changes.per_payment_limit is not None:
        updated = replace(updated, per_payment_limit=per_payment if per_payment and per_payment.minor_units else None)
    if changes.daily_limit is not None:
        updated = replace(updated, daily_limit=daily if daily and daily.minor_units else None)
    if (
        updated.per_payment_limit
        and updated.daily_limit
        and updated.per_payment_limit.currency != updated.daily_limit.currency
    ):
        errors.add("daily_limit.currency_code", "must be the currency of per_payment_limit")
    if changes.public_key_pem is not None:
        if partner.auth_method is not AuthMethod.PRIVATE_KEY_JWT:
            errors.add("public_key_pem", "only for private_key_jwt partners")
        else:
            check_public_key(changes.public_key_pem, "public_key_pem", errors)
            updated = replace(updated, public_key_pem=changes.public_key_pem)
    if changes.tls_client_certificate_sha256 is not None:
        value = changes.tls_client_certificate_sha256
        if value:
            errors.check(
                bool(_CERT_HASH.match(value)), "tls_client_certificate_sha256", "must be 64 lower-case hex characters"
            )
        updated = replace(updated, tls_client_certificate_sha256=value or None)
    if changes.certificate_bound_tokens is not None:
        updated = replace(updated, certificate_bound_tokens=changes.certificate_bound_tokens)
    if changes.redirect_uris is not None:
        uris = check_redirect_uris(changes.redirect_uris, "redirect_uris.redirect_uris", errors)
        updated = replace(updated, redirect_uris=uris)
    if changes.risk_sharing_bps is not None:
        check_risk_sharing(changes.risk_sharing_bps, "risk_sharing", errors)
        updated = replace(updated, risk_sharing_bps=changes.risk_sharing_bps)
    if changes.risk_tier is not None:
        errors.check(changes.risk_tier in RISK_TIERS, "risk_tier", f"must be one of {list(RISK_TIERS)}")
        updated = replace(updated, risk_tier=changes.risk_tier)
    if updated.certificate_bound_tokens and not updated.tls_client_certificate_sha256:
        if changes.certificate_bound_tokens:
            errors.add(_BOUND_FIELD, "needs tls_client_certificate_sha256 (the certificate tokens are bound to)")
        else:
            errors.add(
                "tls_client_certificate_sha256",
                f"cannot be removed while tokens are bound to it: set {_BOUND_FIELD} to false too",
            )
    errors.raise_if_any()
    return replace(updated, updated_at=now)
