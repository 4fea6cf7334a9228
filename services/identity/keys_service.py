"""Service layer for signing keys: make sure one signs, publish the JWKS, rotate."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import jwt

from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size
from meshlib.storage import Codec, IdempotencyKey, Transactions
from services.identity.common import Saved
from services.identity.domain.keys import ALGORITHM, KeyState, SigningKey, generate_key, jwks, signing_key
from services.identity.unit_of_work import IdentityUnitOfWork

UnitOfWorkFactory = Callable[..., IdentityUnitOfWork]

JWKS_CACHE_SECONDS = 1.0


class KeyService:
    """Signing keys: one ACTIVE, older ones RETIRING until their tokens expire.

    A rotated-in key is published ``publish_lead`` before it signs: longer than any
    verifier's JWKS cache age (``OBM_JWKS_MAX_AGE_SECONDS``) plus this service's own
    one-second cache, so no verifier meets its ``kid`` before it knows the key.
    """

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        passphrase: bytes,
        token_lifetime: dt.timedelta,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        publish_lead: dt.timedelta = dt.timedelta(0),
    ) -> None:
        self._uow = uow
        self._tx = Transactions(uow, clock=clock)
        self._passphrase = passphrase
        self._token_lifetime = token_lifetime
        self._publish_lead = publish_lead
        self._clock = clock
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._active: tuple[float, SigningKey] | None = None
        self._private_keys: dict[str, Any] = {}

    async def ensure_active_key(self) -> SigningKey:
        """The signing key, creating the first one on a new database."""

        async def operation(uow: IdentityUnitOfWork) -> SigningKey:
            keys = await uow.signing_keys.all()
            active = next((k for k in keys if k.state is KeyState.ACTIVE), None)
            if active is None:
                active = generate_key(self._passphrase, self._clock())
                await uow.signing_keys.add(active)
                uow.audit.record("key.create", f"signingKeys/{active.kid}", details={"new_kid": active.kid})
            return active

        active = await self._tx.run(operation)
        self._cached = None
        return active

    async def rotate(self) -> SigningKey:
        """A new ACTIVE key; the old one keeps verifying until its last token expired."""
        fresh, _ = await self.rotate_returning_previous()
        return fresh

    async def rotate_returning_previous(self) -> tuple[SigningKey, SigningKey | None]:
        """Rotate; returns the new ACTIVE key and the previous one, now RETIRING."""
        rotated = await self._tx.run(self._rotate)
        self.forget_cached_jwks()
        return rotated

    async def rotate_idempotently(
        self, key: IdempotencyKey, codec: Codec[tuple[SigningKey, SigningKey | None] | Saved]
    ) -> tuple[SigningKey, SigningKey | None] | Saved:
        """RotateSigningKey: a replay of the same request_id answers the first rotation."""
        rotated = await self._tx.run(self._rotate, key=key, codec=codec)
        self.forget_cached_jwks()
        return rotated

    async def _rotate(self, uow: IdentityUnitOfWork) -> tuple[SigningKey, SigningKey | None]:
        """Add a fresh key that signs once its publish lead has passed; the ACTIVE key turns
        RETIRING but signs until then (RETIRING ones past their time turn RETIRED)."""
        now = self._clock()
        fresh = generate_key(self._passphrase, now, activates_at=now + self._publish_lead)
        previous = None
        for key in await uow.signing_keys.all():
            if key.state is KeyState.ACTIVE:
                previous = key.retiring(fresh.signs_from, self._token_lifetime)
                await uow.signing_keys.update_state(previous)
            elif key.due_for_retirement(now):
                await uow.signing_keys.update_state(replace(key, state=KeyState.RETIRED))
        await uow.signing_keys.add(fresh)
        uow.audit.record(
            "key.rotate",
            f"signingKeys/{fresh.kid}",
            details={"new_kid": fresh.kid, "retiring_kid": previous.kid if previous else None},
        )
        return fresh, previous

    def forget_cached_jwks(self) -> None:
        """Drop the cached key set (after a rotation elsewhere, or a clock jump in tests)."""
        self._cached = None
        self._active = None

    async def active_key(self) -> SigningKey:
        """The key that signs now (read through the same one-second cache as the JWKS): the
        previous key until a rotated-in one's publish lead has passed."""
        if self._active is not None and time.monotonic() - self._active[0] < JWKS_CACHE_SECONDS:
            return self._active[1]
        async with self._uow(read_only=True) as uow:
            keys = await uow.signing_keys.all()
        active = signing_key(keys, self._clock())
        if active is None:
            active = await self.ensure_active_key()
        self._active = (time.monotonic(), active)
        return active

    async def sign(self, claims: dict[str, Any], *, typ: str = "at+jwt") -> str:
        """A compact JWS of ``claims`` by the ACTIVE key (``kid`` and ``typ`` headers: an access
        token by default; ``secevent+jwt`` for a pushed event)."""
        key = await self.active_key()
        private = self._private_keys.get(key.kid)
        if private is None:
            # Decrypting the PEM is slow (key derivation); do it once per key.
            private = await asyncio.to_thread(key.private_key, self._passphrase)
            self._private_keys[key.kid] = private
        return jwt.encode(claims, private, algorithm=ALGORITHM, headers={"kid": key.kid, "typ": typ})

    async def list_page(self, requested_size: int, page_token: str) -> tuple[list[SigningKey], str]:
        """Newest first; there are few keys, so the cursor is an offset."""
        size = page_size(requested_size)
        filters = filter_fingerprint(listing="signing_keys")
        cursor = decode_page_token(page_token, filters)
        start = int(cursor.get("offset", 0)) if cursor else 0
        keys = await self.list_keys()
        page = keys[start : start + size]
        more = start + size < len(keys)
        return page, encode_page_token({"offset": start + size}, filters) if more else ""

    async def list_keys(self) -> list[SigningKey]:
        """Every key, newest first, with RETIRING keys past their time shown as RETIRED."""
        async with self._uow(read_only=True) as uow:
            keys = await uow.signing_keys.all()
        now = self._clock()
        return [replace(k, state=KeyState.RETIRED) if k.due_for_retirement(now) else k for k in keys]

    async def jwks(self) -> dict[str, Any]:
        """The published key set (cached for a second: other replicas may rotate)."""
        if self._cached and time.monotonic() - self._cached[0] < JWKS_CACHE_SECONDS:
            return self._cached[1]
        async with self._uow(read_only=True) as uow:
            keys = await uow.signing_keys.all()
        now = self._clock()
        published = jwks([k for k in keys if not k.due_for_retirement(now)])
        self._cached = (time.monotonic(), published)
        return published

    async def jwks_json(self) -> str:
        """The key set as the JSON document verifiers load."""
        return json.dumps(await self.jwks(), separators=(",", ":"))


class OwnServiceToken:
    """Identity's own service token (``sub = service:identity``), signed with its active key:
    identity is the issuer, so it needs no client credentials to call a peer. ``token`` is
    what ``meshlib.auth.service_tokens.ServiceTokenSource.token`` is to other services."""

    def __init__(
        self,
        keys: KeyService,
        issuer: str,
        audience: str,
        scopes: Sequence[str],
        *,
        lifetime_seconds: int = 60,
        refresh_margin_seconds: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._scope = " ".join(scopes)
        self._lifetime = lifetime_seconds
        self._margin = refresh_margin_seconds
        self._clock = clock
        self._token: tuple[float, str] | None = None

    async def token(self) -> str:
        """A valid token, signed afresh shortly before the last one expires."""
        if self._token is None or self._clock() > self._token[0] - self._margin:
            now = int(self._clock())
            signed = await self._keys.sign(
                {
                    "iss": self._issuer,
                    "aud": self._audience,
                    "sub": "service:identity",
                    "client_id": "identity",
                    "scope": self._scope,
                    "iat": now,
                    "nbf": now,
                    "exp": now + self._lifetime,
                    "jti": uuid.uuid4().hex,
                }
            )
            self._token = (now + self._lifetime, signed)
        return self._token[1]
