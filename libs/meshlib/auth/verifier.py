"""The one access-token verifier, used by the gateway and by every service.

ES256 only (the algorithm is pinned before the signature is looked at: no ``none``, no
HS/RS confusion), ``kid`` required and resolved through a cached JWKS (see
:class:`JwksCache`: refreshed when old, refetched for an unknown kid); iss, aud, exp, nbf and iat
checked with a few seconds of leeway. Revocation (tokens, consents, partners) is a
pluggable check so that it reaches every verifier within a second.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import jwt

from meshlib.auth.context import Caller
from meshlib.errors import Unauthenticated, Unavailable

log = logging.getLogger("meshlib.auth")

ALGORITHM = "ES256"
MAX_TOKEN_BYTES = 8192
# A verifier's JWKS copy is refreshed once this old; identity publishes a new key longer
# than this before it signs (OBM_JWKS_MAX_AGE_SECONDS, OBM_SIGNING_KEY_PUBLISH_LEAD_SECONDS).
JWKS_MAX_AGE_SECONDS = 30.0
# At most one JWKS fetch per this interval, however many unknown kids arrive.
UNKNOWN_KID_REFETCH_SECONDS = 1.0
# The start-up fetch (JwksCache.warm_up): tries while identity starts too.
WARM_UP_ATTEMPTS = 60
WARM_UP_PAUSE_SECONDS = 0.5
# Failed fetches an unknown kid sits through before the call answers UNAVAILABLE (a fault the
# caller retries), never "unknown key": the key set could not be read, not the key refused.
UNKNOWN_KID_FETCH_ATTEMPTS = 3
VERIFIED_CACHE_SIZE = 20_000

JwksFetcher = Callable[[], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class VerifierSettings:
    """What a token must say to be accepted here."""

    issuer: str
    audience: str
    leeway_seconds: float = 5.0
    jwks_refresh_interval_seconds: float = UNKNOWN_KID_REFETCH_SECONDS
    max_token_lifetime_seconds: int = 3600


class RevocationCheck(Protocol):
    """Raises Unauthenticated / PermissionDenied when a token, consent or partner is no longer valid."""

    async def check(self, caller: Caller) -> None:
        """Refuse the caller if anything behind its token was revoked or suspended."""


class JwksCache:
    """Public keys by ``kid``.

    Two ways a new key gets here: the copy is refetched in the background once it is
    ``max_age_seconds`` old (identity publishes a rotated-in key longer than that before it
    signs, so normally its first token finds it known), and a token with an unknown kid
    waits for a fetch that *starts after it arrived*. Fetches are shared and start at most
    once per ``refresh_interval_seconds``: a flood of made-up kids costs identity one JWKS
    read per interval, and never uses up the refetch a genuine new kid needs (it waits at
    most one interval for the next one instead of being refused).
    """

    def __init__(
        self,
        fetch: JwksFetcher,
        *,
        refresh_interval_seconds: float = UNKNOWN_KID_REFETCH_SECONDS,
        max_age_seconds: float = JWKS_MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._refresh_interval = refresh_interval_seconds
        self._max_age = max_age_seconds
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._last_start = self._pending_started = float("-inf")
        self._pending: asyncio.Task[None] | None = None
        self._last_fetch_ok = True
        self._warming: asyncio.Task[None] | None = None
        self.fetches = 0

    def load(self, jwks: dict[str, Any]) -> None:
        """Replace the cached key set."""
        keys: dict[str, jwt.PyJWK] = {}
        for entry in jwks.get("keys", []):
            if entry.get("kty") != "EC" or entry.get("crv") != "P-256" or not entry.get("kid"):
                continue
            if entry.get("alg", ALGORITHM) != ALGORITHM or entry.get("use", "sig") != "sig":
                continue
            try:
                keys[entry["kid"]] = jwt.PyJWK(entry, algorithm=ALGORITHM)
            except jwt.PyJWTError:
                log.warning("ignoring an unusable JWK", extra={"kid": entry.get("kid")})
        self._keys = keys

    async def key(self, kid: str) -> jwt.PyJWK | None:
        """The key for ``kid``; an unknown kid waits for a fetch begun after it was asked."""
        found = self._keys.get(kid)
        if found is not None:
            if self._clock() - self._last_start >= self._max_age and not self._fetching():
                self._start_fetch()  # stale: refresh behind the calls, keep serving the copy
            return found
        asked_at = self._clock()
        failed = 0
        while True:
            if self._fetching():
                assert self._pending is not None
                started_after = self._pending_started >= asked_at
                await asyncio.shield(self._pending)
                if started_after:
                    if self._last_fetch_ok or kid in self._keys:
                        return self._keys.get(kid)
                    failed += 1
                    if failed >= UNKNOWN_KID_FETCH_ATTEMPTS:
                        raise Unavailable(
                            "the signing keys could not be read; retry later",
                            reason="PEER_UNAVAILABLE",
                            retry_after_seconds=self._refresh_interval,
                        )
                    asked_at = self._clock()
                continue
            found = self._keys.get(kid)
            if found is not None:
                return found
            wait = self._last_start + self._refresh_interval - self._clock()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            self._start_fetch()

    def warm_up(self, *, attempts: int = WARM_UP_ATTEMPTS, pause_seconds: float = WARM_UP_PAUSE_SECONDS) -> None:
        """Start-up: fetch the key set in the background, so the first call does not wait for
        it (a GetJwks on the first payment's path in every process). Retried while identity is
        not up yet; a failed try never holds back a call's own fetch (it is not one)."""
        if self._warming is None and not self._keys:
            self._warming = asyncio.get_running_loop().create_task(
                self._warm(attempts, pause_seconds), name="jwks-warm-up"
            )

    async def _warm(self, attempts: int, pause_seconds: float) -> None:
        for _ in range(attempts):
            if self._keys:
                return  # a call's own fetch came first
            try:
                jwks = await self._fetch()
            except Exception:
                await asyncio.sleep(pause_seconds)
                continue
            if not self._keys:
                self.load(jwks)
                self._last_start, self._last_fetch_ok = self._clock(), True
            return
        log.warning("could not fetch the JWKS at start-up; the first call will")

    async def refresh(self) -> None:
        """Fetch the key set now (or join the fetch under way)."""
        if not self._fetching():
            self._start_fetch()
        assert self._pending is not None
        await asyncio.shield(self._pending)

    def _fetching(self) -> bool:
        return self._pending is not None and not self._pending.done()

    def _start_fetch(self) -> None:
        self._last_start = self._pending_started = self._clock()
        self.fetches += 1
        self._pending = asyncio.get_running_loop().create_task(self._fetch_and_load(), name="jwks-fetch")

    async def _fetch_and_load(self) -> None:
        try:
            self.load(await self._fetch())
        except Exception:
            self._last_fetch_ok = False
            log.warning("could not fetch the JWKS; keeping the cached keys", exc_info=True)
        else:
            self._last_fetch_ok = True


class JwtVerifier:
    """Verify an access token and turn it into a :class:`Caller`."""

    def __init__(
        self,
        settings: VerifierSettings,
        keys: JwksCache,
        *,
        revocation: RevocationCheck | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.keys = keys
        self.revocation = revocation
        self._clock = clock
        # Tokens whose signature and claims already verified, until they expire: an ES256
        # check costs more than the rest of a gateway hop. Revocation is still asked every call.
        self._verified: OrderedDict[str, Caller] = OrderedDict()

    async def verify(self, token: str) -> Caller:
        """The caller behind ``token``; UNAUTHENTICATED with a stable reason otherwise."""
        caller = self._verified.get(token)
        if caller is None or caller.expires_at.timestamp() + self.settings.leeway_seconds < self._clock():
            caller = await self.verify_signature_and_claims(token)
            self._verified[token] = caller
            while len(self._verified) > VERIFIED_CACHE_SIZE:
                self._verified.popitem(last=False)
        if self.revocation is not None:
            await self.revocation.check(caller)
        return caller

    async def verify_signature_and_claims(self, token: str) -> Caller:
        """Signature, algorithm and registered claims only (no revocation lookup)."""
        if not token or len(token) > MAX_TOKEN_BYTES:
            raise Unauthenticated("the access token is malformed", reason="TOKEN_INVALID")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("the access token is malformed", reason="TOKEN_INVALID") from None
        if header.get("alg") != ALGORITHM or header.get("typ", "at+jwt").lower() not in ("at+jwt", "jwt"):
            raise Unauthenticated("the access token uses a refused algorithm", reason="TOKEN_INVALID")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("the access token has no key id", reason="TOKEN_INVALID")
        key = await self.keys.key(kid)
        if key is None:
            raise Unauthenticated("the access token was signed by an unknown key", reason="SIGNING_KEY_UNKNOWN")
        try:
            claims = jwt.decode(
                token,
                key=key.key,
                algorithms=[ALGORITHM],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
                # PyJWT reads the clock itself; an injected clock is checked below.
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the access token has expired", reason="TOKEN_EXPIRED") from None
        except jwt.PyJWTError:
            raise Unauthenticated("the access token is invalid", reason="TOKEN_INVALID") from None
        now = self._clock()
        leeway = self.settings.leeway_seconds
        exp, iat = claims["exp"], claims["iat"]
        if not isinstance(exp, int | float) or not isinstance(iat, int | float):
            raise Unauthenticated("the access token is invalid", reason="TOKEN_INVALID")
        if exp + leeway < now:
            raise Unauthenticated("the access token has expired", reason="TOKEN_EXPIRED")
        if "nbf" in claims and claims["nbf"] - leeway > now:
            raise Unauthenticated("the access token is not valid yet", reason="TOKEN_INVALID")
        if exp - iat > self.settings.max_token_lifetime_seconds:
            raise Unauthenticated("the access token lives too long", reason="TOKEN_INVALID")
        return caller_from_claims(claims, token)


def caller_from_claims(claims: dict[str, Any], token: str) -> Caller:
    """Map verified JWT claims (RFC 9068 names where they exist) to a Caller."""
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise Unauthenticated("the access token is invalid", reason="TOKEN_INVALID")
    confirmation = claims.get("cnf") if isinstance(claims.get("cnf"), dict) else {}
    return Caller(
        subject=str(claims["sub"]),
        client_id=str(claims.get("client_id", "")),
        scopes=frozenset(scope.split()),
        token_id=str(claims["jti"]),
        expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.UTC),
        consent_id=_optional_str(claims.get("consent_id")),
        customer_id=_optional_str(claims.get("customer_id")),
        partner_id=_optional_str(claims.get("partner_id")),
        rate_limit_tier=_optional_str(claims.get("tier")),
        certificate_thumbprint=_optional_str(confirmation.get("x5t#S256")),
        raw_token=token,
    )


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def static_jwks(jwks: dict[str, Any] | str) -> JwksFetcher:
    """A fetcher that always answers the same key set (tests, mounted JWKS files)."""
    parsed = json.loads(jwks) if isinstance(jwks, str) else jwks

    async def fetch() -> dict[str, Any]:
        return parsed

    return fetch
