"""A real identity service on port 0 plus helpers that walk its flows over gRPC."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import grpc

from meshlib import totp
from meshlib.app import RunningService, start_service
from meshlib.grpc_errors import decode_status, error_info
from openbank.common.v1 import consent_permission_pb2
from openbank.identity.v1 import (
    consent_pb2,
    consent_pb2_grpc,
    customer_pb2,
    customer_pb2_grpc,
    partner_pb2,
    partner_pb2_grpc,
    signing_key_pb2_grpc,
    token_pb2,
    token_pb2_grpc,
)
from services.identity.bootstrap import IdentityComponents, build_spec
from services.identity.settings import IdentitySettings

SECRETS = {
    "ops-admin": "ops-admin-secret-0123456789",
    "bank-app": "bank-app-secret-0123456789",
    "gateway": "gateway-secret-0123456789",
    "auditor": "auditor-secret-0123456789",
    "payment": "payment-secret-0123456789",
}
INTERNAL_CLIENTS = [
    {"client_id": "ops-admin", "secret": SECRETS["ops-admin"], "scopes": ["identity:admin"]},
    {"client_id": "bank-app", "secret": SECRETS["bank-app"], "scopes": ["consents:authorise"]},
    {"client_id": "gateway", "secret": SECRETS["gateway"], "scopes": ["tokens:introspect", "consents:read"]},
    {"client_id": "auditor", "secret": SECRETS["auditor"], "scopes": ["audit:read"]},
    # An outbox relay handing events to the partner event log.
    {"client_id": "payment", "secret": SECRETS["payment"], "scopes": ["events:write"]},
]
PASSWORD = "correct horse battery staple"


def with_clients(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    """INTERNAL_CLIENTS plus ``extra``; a client named in both keeps one entry with both scope sets
    (identity refuses a duplicate client_id)."""
    merged = {client["client_id"]: dict(client) for client in INTERNAL_CLIENTS}
    for client in extra:
        known = merged.get(client["client_id"])
        scopes = [*known["scopes"], *client["scopes"]] if known else list(client["scopes"])
        merged[client["client_id"]] = {**client, "scopes": list(dict.fromkeys(scopes))}
    return list(merged.values())


def request_id() -> str:
    """A fresh idempotency key."""
    return uuid.uuid4().hex


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata for a token."""
    return (("authorization", f"Bearer {token}"),)


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


async def failure(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    """Await a call that must fail; its gRPC code and ErrorInfo reason."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        info = error_info(decode_status(error.trailing_metadata()))
        return error.code(), info.reason if info else ""
    raise AssertionError("the call succeeded")


@dataclass
class ShiftableClock:
    """Real time plus an offset a test can move forward."""

    offset: dt.timedelta = field(default_factory=dt.timedelta)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset

    def advance(self, **delta: float) -> None:
        """Move the clock forward."""
        self.offset += dt.timedelta(**delta)


@dataclass
class Partner:
    """A registered partner as a test sees it."""

    partner_id: str
    client_id: str
    secret: str

    @property
    def name(self) -> str:
        return f"partners/{self.partner_id}"


@dataclass
class Customer:
    """A created customer and its authenticator seed."""

    name: str
    username: str
    seed: bytes
    _used: set[int] = field(default_factory=set)

    def code(self) -> str:
        """A fresh one-time code (current step, else the next one) never handed out before."""
        step = totp.time_step(time.time())
        for candidate in (step, step + 1):
            if candidate not in self._used and (not self._used or candidate > max(self._used)):
                self._used.add(candidate)
                return totp.hotp(self.seed, candidate)
        raise AssertionError("no unused TOTP step left in the window; use another customer")


class Identity:
    """Stubs and flow helpers bound to one running identity service."""

    def __init__(
        self,
        server: RunningService[IdentityComponents],
        channel: grpc.aio.Channel,
        settings: IdentitySettings,
        clock: ShiftableClock,
    ) -> None:
        self.server = server
        self.channel = channel
        self.settings = settings
        self.clock = clock
        self.tokens = token_pb2_grpc.TokenServiceStub(channel)
        self.partners = partner_pb2_grpc.PartnerServiceStub(channel)
        self.customers = customer_pb2_grpc.CustomerServiceStub(channel)
        self.consents = consent_pb2_grpc.ConsentServiceStub(channel)
        self.signing_keys = signing_key_pb2_grpc.SigningKeyServiceStub(channel)
        self._service_tokens: dict[str, str] = {}

    async def service_token(self, client_id: str) -> str:
        """A client-credentials token of an internal client with all its scopes."""
        if client_id not in self._service_tokens:
            scopes = next(c["scopes"] for c in INTERNAL_CLIENTS if c["client_id"] == client_id)
            answer = await self.tokens.IssueToken(
                token_pb2.IssueTokenRequest(
                    grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                    client_id=client_id,
                    client_secret=SECRETS[client_id],
                    scopes=scopes,
                )
            )
            self._service_tokens[client_id] = answer.access_token
        return self._service_tokens[client_id]

    async def admin(self) -> tuple[tuple[str, str], ...]:
        """Operator metadata (identity:admin)."""
        return bearer(await self.service_token("ops-admin"))

    async def bank_app(self) -> tuple[tuple[str, str], ...]:
        """The bank's customer app metadata (consents:authorise)."""
        return bearer(await self.service_token("bank-app"))

    async def register_partner(
        self,
        scopes: tuple[str, ...] = (
            "consents:read",
            "consents:write",
            "accounts:read",
            "payments:write",
            "payments:read",
        ),
        **fields: Any,
    ) -> Partner:
        """A client_secret_post partner."""
        answer = await self.partners.RegisterPartner(
            partner_pb2.RegisterPartnerRequest(
                request_id=request_id(),
                display_name="Wallet",
                allowed_scopes=list(scopes),
                rate_limit_tier="gold",
                token_endpoint_auth_method=partner_pb2.TOKEN_ENDPOINT_AUTH_METHOD_CLIENT_SECRET_POST,
                **fields,
            ),
            metadata=await self.admin(),
        )
        return Partner(answer.partner.name.split("/")[1], answer.partner.client_id, answer.client_secret)

    async def client_token(
        self, partner: Partner, scopes: tuple[str, ...] = ("consents:write", "consents:read")
    ) -> str:
        """A partner's client-credentials token."""
        answer = await self.tokens.IssueToken(
            token_pb2.IssueTokenRequest(
                grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                client_id=partner.client_id,
                client_secret=partner.secret,
                scopes=list(scopes),
            )
        )
        return answer.access_token

    async def create_customer(self, username: str | None = None) -> Customer:
        """A customer with the shared test password."""
        username = username or f"cust-{uuid.uuid4().hex[:10]}"
        answer = await self.customers.CreateCustomer(
            customer_pb2.CreateCustomerRequest(
                request_id=request_id(), username=username, password=PASSWORD, display_name="Ada"
            ),
            metadata=await self.admin(),
        )
        return Customer(answer.customer.name, username, totp.from_base32(answer.totp_secret))

    async def create_consent(
        self,
        partner: Partner,
        challenge: str,
        *,
        expires_in: dt.timedelta = dt.timedelta(days=30),
        permissions: tuple[int, ...] = (
            consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS,
            consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES,
        ),
    ) -> consent_pb2.Consent:
        """A consent awaiting authorisation."""
        request = consent_pb2.CreateConsentRequest(
            request_id=request_id(),
            permissions=list(permissions),
            code_challenge=challenge,
            code_challenge_method="S256",
            reads_per_day=100,
        )
        request.expire_time.FromDatetime(self.clock() + expires_in)
        request.per_payment_limit.currency_code = "EUR"
        request.per_payment_limit.minor_units = 10_000
        answer = await self.consents.CreateConsent(request, metadata=bearer(await self.client_token(partner)))
        return answer.consent

    async def authorise(
        self, consent_name: str, customer: Customer, accounts: tuple[str, ...] = ("accounts/acc-1",)
    ) -> consent_pb2.AuthoriseConsentResponse:
        """The customer authorises at the bank (SCA)."""
        return await self.consents.AuthoriseConsent(
            consent_pb2.AuthoriseConsentRequest(
                request_id=request_id(),
                name=consent_name,
                username=customer.username,
                password=PASSWORD,
                one_time_code=customer.code(),
                accounts=list(accounts),
            ),
            metadata=await self.bank_app(),
        )

    async def exchange(self, partner: Partner, code: str, verifier: str) -> token_pb2.IssueTokenResponse:
        """authorization_code + PKCE."""
        return await self.tokens.IssueToken(
            token_pb2.IssueTokenRequest(
                grant_type=token_pb2.GRANT_TYPE_AUTHORIZATION_CODE,
                client_id=partner.client_id,
                client_secret=partner.secret,
                code=code,
                code_verifier=verifier,
            )
        )

    async def refresh(self, partner: Partner, refresh_token: str) -> token_pb2.IssueTokenResponse:
        """refresh_token grant."""
        return await self.tokens.IssueToken(
            token_pb2.IssueTokenRequest(
                grant_type=token_pb2.GRANT_TYPE_REFRESH_TOKEN,
                client_id=partner.client_id,
                client_secret=partner.secret,
                refresh_token=refresh_token,
            )
        )

    async def consent_bound_token(self, partner: Partner) -> tuple[token_pb2.IssueTokenResponse, str]:
        """The whole flow: consent, SCA authorisation, code exchange. Returns tokens and consent name."""
        verifier, challenge = pkce_pair()
        consent = await self.create_consent(partner, challenge)
        customer = await self.create_customer()
        authorised = await self.authorise(consent.name, customer)
        return await self.exchange(partner, authorised.authorization_code, verifier), consent.name

    async def introspect(self, token: str) -> token_pb2.IntrospectTokenResponse:
        """IntrospectToken as the gateway."""
        return await self.tokens.IntrospectToken(
            token_pb2.IntrospectTokenRequest(token=token), metadata=bearer(await self.service_token("gateway"))
        )


def identity_settings(database_url: str, **overrides: Any) -> IdentitySettings:
    """Settings for a test instance: port 0, cheap Argon2, the internal clients above."""
    values: dict[str, Any] = {
        "port": 0,
        "database_url": database_url,
        "service_name": "identity",
        "internal_clients": json.dumps(INTERNAL_CLIENTS),
        # The development passphrase and plain internal-client secrets, as on a local mesh.
        "allow_dev_secrets": True,
        "argon2_time_cost": 1,
        # No account service runs beside these tests; the mesh-level tests check ownership.
        "verify_consent_accounts": False,
        "argon2_memory_kib": 1024,
        "argon2_parallelism": 1,
    }
    values.update(overrides)
    return IdentitySettings(**values)


async def start_identity(database_url: str, clock: ShiftableClock | None = None, **overrides: Any) -> Identity:
    """Start identity and open a channel to it (stop with ``stop_identity``)."""
    clock = clock or ShiftableClock()
    settings = identity_settings(database_url, **overrides)
    server = await start_service(build_spec(clock), settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    return Identity(server, channel, settings, clock)


async def stop_identity(identity: Identity) -> None:
    """Close the channel and stop the server."""
    await identity.channel.close()
    await identity.server.stop(0)
