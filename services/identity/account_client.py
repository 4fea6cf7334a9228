"""Asks the account service who owns the accounts a customer picks for a consent.

Identity signs its own short-lived service token (``ledger:read``) with its active key: it
is the issuer, so it needs no client credentials to call the ledger.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from meshlib.clients import call_with_retry
from meshlib.errors import NotFound
from meshlib.grpc_errors import decode_rpc_error
from openbank.account.v1 import account_pb2, ledger_pb2, ledger_pb2_grpc
from services.identity.keys_service import KeyService

TOKEN_LIFETIME_SECONDS = 60
CALL_DEADLINE_SECONDS = 2.0


@dataclass(frozen=True)
class AccountOwner:
    """Who owns an account and whether it can be used."""

    customer_id: str | None
    active: bool


class LedgerAccounts:
    """Owners of accounts, from the account service's LedgerService.GetLedgerAccount."""

    def __init__(self, channel: grpc.aio.Channel, keys: KeyService, issuer: str, audience: str) -> None:
        self._stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._token: tuple[float, str] | None = None

    async def _bearer(self) -> tuple[tuple[str, str], ...]:
        if self._token is None or time.time() > self._token[0] - 10:
            now = int(time.time())
            token = await self._keys.sign(
                {
                    "iss": self._issuer,
                    "aud": self._audience,
                    "sub": "service:identity",
                    "client_id": "identity",
                    "scope": "ledger:read",
                    "iat": now,
                    "nbf": now,
                    "exp": now + TOKEN_LIFETIME_SECONDS,
                    "jti": uuid.uuid4().hex,
                }
            )
            self._token = (now + TOKEN_LIFETIME_SECONDS, token)
        return (("authorization", f"Bearer {self._token[1]}"),)

    def _get(self, request: ledger_pb2.GetLedgerAccountRequest, metadata: tuple[tuple[str, str], ...]):  # type: ignore[no-untyped-def]
        async def call():  # type: ignore[no-untyped-def]
            return await self._stub.GetLedgerAccount(request, metadata=metadata, timeout=CALL_DEADLINE_SECONDS)

        return call

    async def owners(self, account_ids: Iterable[str]) -> dict[str, AccountOwner | None]:
        """The owner of each account (None for an account that does not exist)."""
        found: dict[str, AccountOwner | None] = {}
        for account_id in account_ids:
            metadata = await self._bearer()
            request = ledger_pb2.GetLedgerAccountRequest(name=f"accounts/{account_id}")
            try:
                answer = await call_with_retry(
                    lambda r=request, m=metadata, **options: self._stub.GetLedgerAccount(
                        r, metadata=m, timeout=CALL_DEADLINE_SECONDS, **options
                    ),
                    what="ledger.GetLedgerAccount",
                )
            except grpc.aio.AioRpcError as error:
                failure = decode_rpc_error(error)
                if isinstance(failure, NotFound):
                    found[account_id] = None
                    continue
                raise failure from None
            found[account_id] = AccountOwner(
                customer_id=answer.account.customer.removeprefix("customers/") or None,
                active=answer.account.status == account_pb2.ACCOUNT_STATUS_ACTIVE,
            )
        return found
