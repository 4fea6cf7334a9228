"""The OAuth 2.0 token endpoint: client authentication, the grants (client credentials,
authorization code, refresh token, CIBA poll), revocation (RFC 7009) and introspection
(RFC 7662).

Client authentication never tells an unknown client from a wrong secret: both answer
UNAUTHENTICATED INVALID_CLIENT with the same message after the same (keyed-hash) work. Only
a client that proved who it is learns that it is suspended. Failures are counted per
client_id; a client_id that failed too often has its further failures refused for a while
(ClientAuthThrottle), its right credentials still accepted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from meshlib.auth.certificates import x5t_s256
from meshlib.auth.context import Caller
from meshlib.errors import FieldCollector, InvalidArgument, MeshError, PermissionDenied, Unauthenticated
from meshlib.storage import CommitAndRaise, Transactions
from services.identity.common import Clock, EventPublisher, UnitOfWorkFactory
from services.identity.domain.client_throttle import ClientAuthThrottle
from services.identity.domain.consents import Consent, ConsentState
from services.identity.domain.partners import ALL_SCOPES, AuthMethod, Partner
from services.identity.domain.secrets import ClientSecretHasher, constant_time_equal, digest, new_secret
from services.identity.domain.tokens import (
    CLIENT_ASSERTION_TYPE,
    AccessTokenGrant,
    IssuedToken,
    RefreshToken,
    access_token_claims,
    invalid_client,
    pkce_matches,
    verify_client_assertion,
)
from services.identity.internal_clients import InternalClient
from services.identity.keys_service import KeyService
from services.identity.token_messages import ClientCredentials, Introspection, IssuedTokens, TokenRequest, TokenSettings
from services.identity.token_status import TokenStatuses, answer_from_state
from services.identity.unit_of_work import IdentityUnitOfWork

if TYPE_CHECKING:
    from services.identity.decoupled_service import DecoupledService

log = logging.getLogger("identity.tokens")

GRANT_TYPES = frozenset({"client_credentials", "authorization_code", "refresh_token", "ciba"})


@dataclass(frozen=True)
class _Client:
    """An authenticated client: a partner or one of the mesh's own."""

    client_id: str
    partner: Partner | None = None
    internal: InternalClient | None = None


ClaimsVerifier = Callable[[str], Awaitable[Caller]]


class TokenService:
    """Issue, revoke and introspect tokens."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        keys: KeyService,
        client_secrets: ClientSecretHasher,
        internal_clients: dict[str, InternalClient],
        events: EventPublisher,
        settings: TokenSettings,
        verify_claims: ClaimsVerifier,
        clock: Clock,
        throttle: ClientAuthThrottle | None = None,
        decoupled: DecoupledService | None = None,
    ) -> None:
        self._uow = uow
        self._decoupled = decoupled
        self._tx = Transactions(uow, clock=clock)
        self._keys = keys
        self._secrets = client_secrets
        self._throttle = throttle or ClientAuthThrottle()
        self._internal = internal_clients
        self._events = events
        self._settings = settings
        self._verify_claims = verify_claims
        self._clock = clock
        # Statuses from the store for tokens already verified (CheckTokenStatuses, identity's
        # own re-checks of its open streams).
        self.statuses = TokenStatuses(uow, internal_clients, verify_claims, clock)

    # ---- IssueToken ----------------------------------------------------------------------

    async def issue(self, request: TokenRequest) -> IssuedTokens:
        """Authenticate the client, then run its grant."""
        errors = FieldCollector()
        if request.grant_type is None:
            errors.add("grant_type", "required: client_credentials, authorization_code or refresh_token")
        _check_credentials_shape(request.credentials, errors)
        if request.grant_type == "authorization_code":
            errors.check(bool(request.code), "code", "required for authorization_code")
            errors.check(bool(request.code_verifier), "code_verifier", "required for authorization_code")
        elif request.grant_type == "refresh_token":
            errors.check(bool(request.refresh_token), "refresh_token", "required for refresh_token")
        elif request.grant_type == "client_credentials":
            errors.check(bool(request.scopes), "scopes", "required for client_credentials")
        elif request.grant_type == "ciba":
            errors.check(bool(request.auth_req_id), "auth_req_id", "required for the CIBA grant")
        errors.raise_if_any()
        if request.grant_type not in GRANT_TYPES or (request.grant_type == "ciba" and self._decoupled is None):
            raise InvalidArgument.field("grant_type", "not supported", reason="UNSUPPORTED_GRANT_TYPE")
        now = self._clock()
        client = await self._authenticate(request.credentials, now)
        log.info("token requested", extra={"client_id": client.client_id, "grant_type": request.grant_type})
        if request.grant_type == "client_credentials":
            return await self._client_credentials(client, request.scopes, now)
        if client.partner is None:
            raise InvalidArgument.field(
                "grant_type", "internal clients use client_credentials only", reason="UNSUPPORTED_GRANT_TYPE"
            )
        if request.grant_type == "authorization_code":
            return await self._authorization_code(client.partner, request, now)
        if request.grant_type == "ciba":
            return await self._ciba(client.partner, request, now)
        return await self._refresh(client.partner, request, now)

    async def _authenticate(
        self, credentials: ClientCredentials, now: dt.datetime, *, allow_suspended: bool = False
    ) -> _Client:
        # While locked, wrong credentials are refused with the time to wait; right ones pass
        # (see ClientAuthThrottle: a lock must not be a way to lock a partner out).
        locked_for = self._throttle.locked_for(credentials.client_id)
        try:
            client = await self._authenticate_client(
                credentials, now, allow_suspended=allow_suspended, locked=locked_for > 0
            )
        except Unauthenticated:
            self._throttle.failed(credentials.client_id)
            if locked_for > 0:
                raise self._throttle.refusal(locked_for) from None
            raise
        self._throttle.succeeded(credentials.client_id)
        return client

    async def _secret_matches(self, stored_hash: str | None, candidate: str, *, locked: bool = False) -> bool:
        if self._secrets.is_legacy(stored_hash):  # Argon2id from before keyed hashes: slow, off the loop
            if locked:
                return False  # not worth 170 ms of CPU for a client under a lock
            return await asyncio.to_thread(self._secrets.verify, stored_hash, candidate)
        return self._secrets.verify(stored_hash, candidate)

    async def _authenticate_client(
        self, credentials: ClientCredentials, now: dt.datetime, *, allow_suspended: bool, locked: bool = False
    ) -> _Client:
        internal = self._internal.get(credentials.client_id)
        if internal is not None:
            ok = bool(credentials.client_secret) and await self._secret_matches(
                internal.secret_hash, credentials.client_secret, locked=locked
            )
            if not ok:
                log.info("client authentication failed", extra={"client_kind": "internal"})
                raise invalid_client()
            if self._secrets.is_legacy(internal.secret_hash):
                # Configured as Argon2id: pay for it once per replica, keep the keyed hash.
                internal = replace(internal, secret_hash=self._secrets.hash(credentials.client_secret))
                self._internal[internal.client_id] = internal
            return _Client(internal.client_id, internal=internal)
        async with self._uow(read_only=True) as uow:
            partner = await uow.partners.by_client_id(credentials.client_id)
        if partner is not None and partner.auth_method is AuthMethod.PRIVATE_KEY_JWT:
            # Writes: the assertion's jti is remembered against replays.
            await self._tx.run(lambda uow: self._check_assertion(uow, partner, credentials, now))
        if partner is None or partner.auth_method is AuthMethod.CLIENT_SECRET_POST:
            # Unknown clients pay for a decoy verification: same time, same answer.
            stored = partner.client_secret_hash if partner is not None else None
            ok = await self._secret_matches(stored, credentials.client_secret or "\x00", locked=locked)
            if partner is None or not ok or not credentials.client_secret:
                log.info("client authentication failed", extra={"client_kind": "partner"})
                raise invalid_client()
            if self._secrets.is_legacy(stored):
                await self._upgrade_secret_hash(partner, stored, credentials.client_secret)
        if partner.tls_client_certificate_sha256 and not (
            credentials.certificate_sha256
            and constant_time_equal(partner.tls_client_certificate_sha256, credentials.certificate_sha256)
        ):
            raise Unauthenticated(
                "the TLS client certificate is not the partner's registered one", reason="CLIENT_CERTIFICATE_MISMATCH"
            )
        if not partner.active and not allow_suspended:
            raise PermissionDenied("the partner is suspended", reason="PARTNER_SUSPENDED")
        return _Client(partner.client_id, partner=partner)

    async def _upgrade_secret_hash(self, partner: Partner, legacy_hash: str | None, secret: str) -> None:
        """Replace a verified Argon2id hash with the keyed hash (unless the secret changed meanwhile)."""
        keyed = self._secrets.hash(secret)

        async def operation(uow: IdentityUnitOfWork) -> None:
            await uow.partners.replace_secret_hash(partner.partner_id, legacy_hash, keyed)

        await self._tx.run(operation)

    async def _check_assertion(
        self, uow: IdentityUnitOfWork, partner: Partner, credentials: ClientCredentials, now: dt.datetime
    ) -> None:
        if not credentials.client_assertion or credentials.client_assertion_type != CLIENT_ASSERTION_TYPE:
            raise invalid_client()
        assert partner.public_key_pem is not None
        claims = verify_client_assertion(
            credentials.client_assertion,
            client_id=partner.client_id,
            public_key_pem=partner.public_key_pem,
            audiences=(self._settings.issuer, self._settings.audience),
            now=now,
        )
        expires = dt.datetime.fromtimestamp(claims["exp"], dt.UTC)
        if not await uow.grants.remember_assertion(partner.client_id, claims["jti"], expires, now):
            raise invalid_client()

    async def _client_credentials(self, client: _Client, scopes: tuple[str, ...], now: dt.datetime) -> IssuedTokens:
        allowed = client.internal.scopes if client.internal else frozenset(client.partner.allowed_scopes)  # type: ignore[union-attr]
        _require_scopes_within(scopes, allowed)
        if client.internal is not None:
            grant = AccessTokenGrant(
                subject=client.internal.subject, client_id=client.client_id, scopes=_ordered(scopes)
            )
        else:
            partner = client.partner
            assert partner is not None
            grant = AccessTokenGrant(
                subject=partner.partner_id,
                client_id=partner.client_id,
                scopes=_ordered(scopes),
                partner_id=partner.partner_id,
                tier=partner.rate_limit_tier,
                certificate_thumbprint=_certificate_binding(partner),
            )
        token = await self._tx.run(lambda uow: self._access_token(uow, grant, now))
        return IssuedTokens(token, self._lifetime_seconds, grant.scopes)

    async def _authorization_code(self, partner: Partner, request: TokenRequest, now: dt.datetime) -> IssuedTokens:
        failure: MeshError | None = None
        revoked: list[str] = []

        async def operation(uow: IdentityUnitOfWork) -> IssuedTokens:
            nonlocal failure, revoked
            failure, revoked = None, []
            code = await uow.grants.code(digest(request.code))
            if code is None or code.partner_id != partner.partner_id:
                raise _invalid_grant("code")
            if code.used_at is not None or not await uow.grants.mark_code_used(code.code_hash, now):
                # A replayed code: kill everything issued from it (RFC 6749 section 4.1.2).
                revoked = await uow.grants.revoke_access_tokens(now, family_id=code.family_id)
                await uow.grants.revoke_refresh_tokens(now, family_id=code.family_id)
                failure = _invalid_grant("code", "the authorization code was already used")
            elif code.expires_at <= now:
                failure = _invalid_grant("code", "the authorization code has expired")
            elif not pkce_matches(request.code_verifier, code.code_challenge):
                failure = InvalidArgument.field(
                    "code_verifier", "does not match the code_challenge", reason="PKCE_VERIFICATION_FAILED"
                )
            else:
                try:
                    consent = await _usable_consent(uow, code.consent_id, now)
                    scopes = _consent_scopes(request.scopes, consent, partner)
                    grant = AccessTokenGrant(
                        subject=partner.partner_id,
                        client_id=partner.client_id,
                        scopes=scopes,
                        partner_id=partner.partner_id,
                        consent_id=consent.consent_id,
                        customer_id=code.customer_id,
                        tier=partner.rate_limit_tier,
                        family_id=code.family_id,
                        certificate_thumbprint=_certificate_binding(partner),
                    )
                    return await self._token_pair(uow, grant, consent, now, refresh_expires_at=None)
                except MeshError as error:
                    failure = error
            # The code is consumed whatever happened after it was found.
            raise CommitAndRaise(failure)

        return await self._refused_after_commit(operation, lambda: (failure, revoked))

    async def _refresh(self, partner: Partner, request: TokenRequest, now: dt.datetime) -> IssuedTokens:
        failure: MeshError | None = None
        revoked: list[str] = []

        async def operation(uow: IdentityUnitOfWork) -> IssuedTokens:
            nonlocal failure, revoked
            failure, revoked = None, []
            stored = await uow.grants.refresh_token(digest(request.refresh_token))
            if stored is None or stored.client_id != partner.client_id or stored.revoked_at is not None:
                raise _invalid_grant("refresh_token")
            if stored.used_at is not None or not await uow.grants.mark_refresh_token_used(stored.token_hash, now):
                revoked = await uow.grants.revoke_access_tokens(now, family_id=stored.family_id)
                await uow.grants.revoke_refresh_tokens(now, family_id=stored.family_id)
                failure = InvalidArgument.field(
                    "refresh_token",
                    "was already used; the whole token family is revoked",
                    reason="REFRESH_TOKEN_REUSED",
                )
            elif stored.expires_at <= now:
                failure = _invalid_grant("refresh_token", "the refresh token has expired")
            else:
                try:
                    consent = await _usable_consent(uow, stored.consent_id, now)
                    allowed = frozenset(stored.scopes) & frozenset(partner.allowed_scopes)
                    scopes = request.scopes or tuple(sorted(allowed))
                    _require_scopes_within(scopes, allowed)
                    grant = AccessTokenGrant(
                        subject=partner.partner_id,
                        client_id=partner.client_id,
                        scopes=_ordered(scopes),
                        partner_id=partner.partner_id,
                        consent_id=consent.consent_id,
                        customer_id=stored.customer_id,
                        tier=partner.rate_limit_tier,
                        family_id=stored.family_id,
                        certificate_thumbprint=_certificate_binding(partner),
                    )
                    return await self._token_pair(uow, grant, consent, now, refresh_expires_at=stored.expires_at)
                except MeshError as error:
                    failure = error
            raise CommitAndRaise(failure)

        return await self._refused_after_commit(operation, lambda: (failure, revoked))

    async def _ciba(self, partner: Partner, request: TokenRequest, now: dt.datetime) -> IssuedTokens:
        """Poll a decoupled authorisation (decoupled_service.poll): tokens once it is approved."""
        assert self._decoupled is not None
        decoupled = self._decoupled

        async def operation(uow: IdentityUnitOfWork) -> IssuedTokens:
            approved = await decoupled.poll(uow, partner, request.auth_req_id)
            consent = await _usable_consent(uow, approved.consent.consent_id, now)
            grant = AccessTokenGrant(
                subject=partner.partner_id,
                client_id=partner.client_id,
                scopes=_consent_scopes(request.scopes, consent, partner),
                partner_id=partner.partner_id,
                consent_id=consent.consent_id,
                customer_id=approved.customer_id,
                tier=partner.rate_limit_tier,
                family_id=approved.family_id,
                certificate_thumbprint=_certificate_binding(partner),
            )
            return await self._token_pair(uow, grant, consent, now, refresh_expires_at=None)

        return await self._tx.run(operation)

    async def _refused_after_commit(
        self,
        operation: Callable[[IdentityUnitOfWork], Awaitable[IssuedTokens]],
        outcome: Callable[[], tuple[MeshError | None, list[str]]],
    ) -> IssuedTokens:
        """Run a grant whose refusal keeps its writes (a consumed code, a revoked family);
        ``outcome`` tells the refusal and the access tokens revoked, announced once committed."""
        try:
            return await self._tx.run(operation)
        except MeshError as error:
            failure, revoked = outcome()
            if error is failure:
                await self._announce_revoked(revoked)
            raise

    async def _token_pair(
        self,
        uow: IdentityUnitOfWork,
        grant: AccessTokenGrant,
        consent: Consent,
        now: dt.datetime,
        refresh_expires_at: dt.datetime | None,
    ) -> IssuedTokens:
        access = await self._access_token(uow, grant, now)
        refresh = new_secret()
        expires = refresh_expires_at or min(now + self._settings.refresh_token_lifetime, consent.expires_at)
        assert grant.partner_id and grant.consent_id and grant.customer_id and grant.family_id
        await uow.grants.add_refresh_token(
            RefreshToken(
                token_hash=digest(refresh),
                family_id=grant.family_id,
                partner_id=grant.partner_id,
                client_id=grant.client_id,
                consent_id=grant.consent_id,
                customer_id=grant.customer_id,
                scopes=grant.scopes,
                issued_at=now,
                expires_at=expires,
            )
        )
        return IssuedTokens(access, self._lifetime_seconds, grant.scopes, refresh, grant.consent_id)

    async def _access_token(self, uow: IdentityUnitOfWork, grant: AccessTokenGrant, now: dt.datetime) -> str:
        claims = access_token_claims(
            grant,
            issuer=self._settings.issuer,
            audience=self._settings.audience,
            now=now,
            lifetime=self._settings.access_token_lifetime,
        )
        await uow.grants.add_access_token(
            IssuedToken(
                jti=claims["jti"],
                client_id=grant.client_id,
                partner_id=grant.partner_id,
                consent_id=grant.consent_id,
                family_id=grant.family_id,
                issued_at=now,
                expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.UTC),
            )
        )
        return await self._keys.sign(claims)

    @property
    def _lifetime_seconds(self) -> int:
        return int(self._settings.access_token_lifetime.total_seconds())

    async def _announce_revoked(self, token_ids: list[str]) -> None:
        if token_ids:
            log.info("access tokens revoked", extra={"count": len(token_ids)})
        for jti in token_ids:
            await self._events.publish("token", jti, "REVOKED")

    # ---- RevokeToken (RFC 7009) ----------------------------------------------------------

    async def revoke(self, credentials: ClientCredentials, token: str, hint: str | None) -> None:
        """Revoke one of the client's own tokens; unknown or foreign tokens succeed silently."""
        errors = FieldCollector()
        _check_credentials_shape(credentials, errors)
        errors.check(bool(token), "token", "required")
        errors.raise_if_any()
        now = self._clock()
        client = await self._authenticate(credentials, now, allow_suspended=True)
        looks_like_jwt = token.count(".") == 2
        jti = await self._own_token_id(token, client.client_id) if hint != "refresh_token" and looks_like_jwt else None

        async def operation(uow: IdentityUnitOfWork) -> list[str]:
            if jti is not None:
                return await uow.grants.revoke_access_tokens(now, jti=jti)
            if not looks_like_jwt:
                stored = await uow.grants.refresh_token(digest(token))
                if stored is not None and stored.client_id == client.client_id:
                    # Revoking a refresh token revokes what was issued from its family.
                    await uow.grants.revoke_refresh_tokens(now, family_id=stored.family_id)
                    return await uow.grants.revoke_access_tokens(now, family_id=stored.family_id)
            return []

        await self._announce_revoked(await self._tx.run(operation))

    async def _own_token_id(self, token: str, client_id: str) -> str | None:
        try:
            caller = await self._verify_claims(token)
        except MeshError:
            return None
        return caller.token_id if caller.client_id == client_id else None

    # ---- IntrospectToken (RFC 7662) ------------------------------------------------------

    async def introspect(self, token: str) -> Introspection:
        """Whether ``token`` is usable now, with the live state of its partner and consent."""
        if not token:
            raise InvalidArgument.field("token", "required")
        try:
            caller = await self._verify_claims(token)
        except MeshError:
            return Introspection(active=False)
        async with self._uow(read_only=True) as uow:
            return await answer_from_state(uow, caller, self._clock(), self._internal)


def _certificate_binding(partner: Partner) -> str | None:
    """The ``x5t#S256`` the partner's access tokens are bound to, if they are (RFC 8705). The
    token endpoint already required that certificate on the connection (see _authenticate)."""
    if partner.certificate_bound_tokens and partner.tls_client_certificate_sha256:
        return x5t_s256(partner.tls_client_certificate_sha256)
    return None


def _check_credentials_shape(credentials: ClientCredentials, errors: FieldCollector) -> None:
    errors.check(bool(credentials.client_id) and len(credentials.client_id) <= 64, "client_id", "required")
    if bool(credentials.client_secret) == bool(credentials.client_assertion):
        errors.add("client_secret", "send exactly one of client_secret and client_assertion")
    if credentials.client_assertion and credentials.client_assertion_type != CLIENT_ASSERTION_TYPE:
        errors.add("client_assertion_type", f"must be {CLIENT_ASSERTION_TYPE!r}")
    if not credentials.client_assertion and credentials.client_assertion_type:
        errors.add("client_assertion_type", "must be empty without client_assertion")


def _ordered(scopes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(sorted(set(scopes)))


def _require_scopes_within(scopes: tuple[str, ...], allowed: frozenset[str]) -> None:
    refused = sorted(s for s in set(scopes) if s not in allowed or s not in ALL_SCOPES)
    if refused:
        raise InvalidArgument.field(
            "scopes", f"not allowed for this client: {' '.join(refused)}", reason="INVALID_SCOPE"
        )


def _consent_scopes(requested: tuple[str, ...], consent: Consent, partner: Partner) -> tuple[str, ...]:
    """Requested scopes (or, by default, those the consent's permissions need), within the partner's."""
    allowed = frozenset(partner.allowed_scopes)
    if requested:
        _require_scopes_within(requested, allowed & (consent.scopes_needed() | {"consents:read"}))
        return _ordered(requested)
    scopes = consent.scopes_needed() & allowed
    if not scopes:
        raise InvalidArgument.field(
            "scopes", "the partner is allowed none of the scopes this consent needs", reason="INVALID_SCOPE"
        )
    return _ordered(tuple(scopes))


def _invalid_grant(field_name: str, message: str = "is unknown, expired, already used or not yours") -> InvalidArgument:
    return InvalidArgument.field(field_name, message, reason="INVALID_GRANT")


async def _usable_consent(uow: IdentityUnitOfWork, consent_id: str, now: dt.datetime) -> Consent:
    consent = await uow.consents.get(consent_id)
    if consent is None:
        raise _invalid_grant("code")
    consent = consent.current(now)
    if consent.state is ConsentState.REVOKED:
        raise PermissionDenied("the consent was revoked", reason="CONSENT_REVOKED")
    if consent.state is ConsentState.EXPIRED:
        raise PermissionDenied("the consent has expired", reason="CONSENT_EXPIRED")
    if consent.state is not ConsentState.AUTHORISED:
        raise PermissionDenied("the consent is not authorised", reason="CONSENT_NOT_AUTHORISED")
    return consent
