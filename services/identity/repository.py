"""Identity repositories: they hide SQL from the service layer."""

from __future__ import annotations

import datetime as dt
import json

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from services.identity.domain.keys import KeyState, SigningKey
from services.identity.tables import signing_keys


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; everything here is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


class SigningKeyRepository:
    """Signing keys, persisted with their private half encrypted."""

    def __init__(self, connection: AsyncConnection) -> None:
        self._connection = connection

    async def all(self) -> list[SigningKey]:
        """Every key, newest first."""
        rows = await self._connection.execute(sa.select(signing_keys).order_by(signing_keys.c.created_at.desc()))
        return [
            SigningKey(
                kid=row.kid,
                state=KeyState(row.state),
                public_jwk=json.loads(row.public_jwk),
                encrypted_private_pem=bytes(row.encrypted_private_pem),
                created_at=_aware(row.created_at),  # type: ignore[arg-type]
                retire_after=_aware(row.retire_after),
            )
            for row in rows
        ]

    async def add(self, key: SigningKey) -> None:
        """Store a new key."""
        await self._connection.execute(
            signing_keys.insert().values(
                kid=key.kid,
                state=key.state.value,
                public_jwk=json.dumps(key.public_jwk),
                encrypted_private_pem=key.encrypted_private_pem,
                created_at=key.created_at,
                retire_after=key.retire_after,
            )
        )

    async def update_state(self, key: SigningKey) -> None:
        """Persist a key's new state."""
        await self._connection.execute(
            signing_keys.update()
            .where(signing_keys.c.kid == key.kid)
            .values(state=key.state.value, retire_after=key.retire_after)
        )
