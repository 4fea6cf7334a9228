"""Asks the account service who owns the accounts a customer picks for a consent.

Calls go through a :class:`~meshlib.clients.PeerCaller` with identity's own service token
(``ledger:read``, see ``keys_service.OwnServiceToken``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import grpc

from meshlib.clients import Bearer, PeerCaller
from meshlib.errors import NotFound
from openbank.account.v1 import account_pb2, ledger_pb2, ledger_pb2_grpc

CALL_DEADLINE_SECONDS = 2.0


@dataclass(frozen=True)
class AccountOwner:
    """Who owns an account and whether it can be used."""

    customer_id: str | None
    active: bool


class LedgerAccounts:
    """Owners of accounts, from the account service's LedgerService.GetLedgerAccount."""

    def __init__(self, channel: grpc.aio.Channel, bearer: Bearer) -> None:
        self._stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        self._call = PeerCaller(bearer, deadline_seconds=CALL_DEADLINE_SECONDS)

    async def owners(self, account_ids: Iterable[str]) -> dict[str, AccountOwner | None]:
        """The owner of each account (None for an account that does not exist)."""
        found: dict[str, AccountOwner | None] = {}
        for account_id in account_ids:
            request = ledger_pb2.GetLedgerAccountRequest(name=f"accounts/{account_id}")
            try:
                answer = await self._call(self._stub.GetLedgerAccount, request, "ledger.GetLedgerAccount")
            except NotFound:
                found[account_id] = None
                continue
            found[account_id] = AccountOwner(
                customer_id=answer.account.customer.removeprefix("customers/") or None,
                active=answer.account.status == account_pb2.ACCOUNT_STATUS_ACTIVE,
            )
        return found
