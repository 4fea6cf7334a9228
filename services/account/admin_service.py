"""Account administration: open, freeze, unfreeze, close, and the ledger's totals (no gRPC)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable

from meshlib.errors import AlreadyExists, NotFound
from meshlib.idempotency import validate_request_id
from services.account.answers import request_fingerprint
from services.account.domain.ledger import Account, AccountType, OpenAccountCommand, new_account
from services.account.ledger_service import Clock, LedgerService, UowFactory, run_transaction, utc_now
from services.account.repository import CurrencyTotals

log = logging.getLogger("services.account.admin")

ADMIN_SCOPE = "account-admin"


class AccountAdminService:
    """Operator and service-to-service management of accounts."""

    def __init__(self, uow: UowFactory, ledger: LedgerService, clock: Clock = utc_now) -> None:
        self._uow = uow
        self._ledger = ledger
        self._now = clock

    async def open_account(self, command: OpenAccountCommand) -> Account:
        """Open an account (ACTIVE, zero balance); a replay returns the first answer."""
        validate_request_id(command.request_id)
        command.validate()
        fingerprint = request_fingerprint(command={**command.__dict__, "request_id": None})
        if command.type is not AccountType.BANK_EQUITY:
            # Money enters a currency through its equity account: make sure it exists.
            await self._ledger.ensure_equity_account(command.currency)

        async def once() -> Account:
            async with self._uow() as uow:
                saved = await uow.idempotency.lookup(ADMIN_SCOPE, "OpenAccount", command.request_id, fingerprint)
                if saved is not None:
                    return Account.from_snapshot(json.loads(saved))
                if command.type is AccountType.BANK_EQUITY and await uow.accounts.equity_id(command.currency):
                    raise AlreadyExists(
                        "the currency already has a bank equity account", reason="RESOURCE_ALREADY_EXISTS"
                    )
                now = self._now()
                account = new_account(command, uuid.uuid4().hex, now)
                await uow.accounts.add(account)
                await uow.idempotency.save(
                    ADMIN_SCOPE,
                    "OpenAccount",
                    command.request_id,
                    fingerprint,
                    json.dumps(account.snapshot()).encode(),
                    now,
                )
                await uow.commit()
            log.info(
                "account opened",
                extra={"account": account.id, "type": account.type.value, "currency": account.currency},
            )
            return account

        return await run_transaction(once)

    async def freeze_account(self, request_id: str, account_id: str, reason: str = "") -> Account:
        """ACTIVE -> FROZEN (holds may still be voided or expire)."""
        account = await self._transition("FreezeAccount", request_id, account_id, Account.freeze)
        log.info("account frozen", extra={"account": account_id, "reason": reason[:500]})
        return account

    async def unfreeze_account(self, request_id: str, account_id: str) -> Account:
        """FROZEN -> ACTIVE."""
        account = await self._transition("UnfreezeAccount", request_id, account_id, Account.unfreeze)
        log.info("account unfrozen", extra={"account": account_id})
        return account

    async def close_account(self, request_id: str, account_id: str) -> Account:
        """-> CLOSED, only with a zero balance and no hold."""
        account = await self._transition("CloseAccount", request_id, account_id, Account.close)
        log.info("account closed", extra={"account": account_id})
        return account

    async def _transition(
        self, method: str, request_id: str, account_id: str, change: Callable[[Account, dt.datetime], None]
    ) -> Account:
        validate_request_id(request_id)
        fingerprint = request_fingerprint(account=account_id)

        async def once() -> Account:
            async with self._uow() as uow:
                locked = await uow.accounts.lock([account_id])
                saved = await uow.idempotency.lookup(ADMIN_SCOPE, method, request_id, fingerprint)
                if saved is not None:
                    return Account.from_snapshot(json.loads(saved))
                account = locked.get(account_id)
                if account is None:
                    raise NotFound("account not found", metadata={"resource_name": f"accounts/{account_id}"})
                now = self._now()
                change(account, now)
                await uow.accounts.save(account)
                await uow.idempotency.save(
                    ADMIN_SCOPE, method, request_id, fingerprint, json.dumps(account.snapshot()).encode(), now
                )
                await uow.commit()
            return account

        return await run_transaction(once)

    async def ledger_totals(self) -> tuple[list[CurrencyTotals], dt.datetime]:
        """Per-currency sums of every account, read in one snapshot."""
        async with self._uow(read_only=True) as uow:
            read_time = self._now()
            totals = await uow.accounts.totals()
        return totals, read_time
