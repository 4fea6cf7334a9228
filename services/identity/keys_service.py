"""Service layer for signing keys: make sure one signs, publish the JWKS, rotate."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Any

from services.identity.domain.keys import KeyState, SigningKey, generate_key, jwks
from services.identity.unit_of_work import IdentityUnitOfWork

UnitOfWorkFactory = Callable[..., IdentityUnitOfWork]

JWKS_CACHE_SECONDS = 1.0


class KeyService:
    """Signing keys: one ACTIVE, older ones RETIRING until their tokens expire."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        passphrase: bytes,
        token_lifetime: dt.timedelta,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self._uow = uow
        self._passphrase = passphrase
        self._token_lifetime = token_lifetime
        self._clock = clock
        self._cached: tuple[float, dict[str, Any]] | None = None

    async def ensure_active_key(self) -> SigningKey:
        """The signing key, creating the first one on a new database."""
        async with self._uow() as uow:
            keys = await uow.signing_keys.all()
            active = next((k for k in keys if k.state is KeyState.ACTIVE), None)
            if active is None:
                active = generate_key(self._passphrase, self._clock())
                await uow.signing_keys.add(active)
            await uow.commit()
        self._cached = None
        return active

    async def rotate(self) -> SigningKey:
        """A new ACTIVE key; the old one keeps verifying until its last token expired."""
        now = self._clock()
        async with self._uow() as uow:
            for key in await uow.signing_keys.all():
                if key.state is KeyState.ACTIVE:
                    await uow.signing_keys.update_state(key.retiring(now, self._token_lifetime))
                elif key.due_for_retirement(now):
                    await uow.signing_keys.update_state(SigningKey(**{**key.__dict__, "state": KeyState.RETIRED}))
            fresh = generate_key(self._passphrase, now)
            await uow.signing_keys.add(fresh)
            await uow.commit()
        self._cached = None
        return fresh

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
