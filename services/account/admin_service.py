"""Account administration: open, freeze, unfreeze, close, and the ledger's totals (no gRPC)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import uuid
from collections.abc import Callable

from meshlib.errors import AlreadyExists
from meshlib.idempotency import validate_request_id
from meshlib.storage import Codec, IdempotencyKey, Transactions
from services.account.answers import request_fingerprint
from services.account.batches import account_not_found
from services.account.customer_accounts import AccountSearch
from services.account.domain.ledger import Account, AccountType, OpenAccountCommand, new_account
from services.account.ledger_service import Clock, LedgerService, UowFactory, utc_now
from services.account.repository import CurrencyTotals
from services.account.transfers import audit_account
from services.account.unit_of_work import AccountUnitOfWork

log = logging.getLogger("services.account.admin")

ADMIN_SCOPE = "account-admin"

# What an account rpc saves for a replay: the account's descriptive fields (not its totals).
ACCOUNT_ANSWER: Codec[Account] = Codec(
    lambda account: json.dumps(account.snapshot()).encode(), lambda saved: Account.from_snapshot(json.loads(saved))
)


class AccountAdminService:
    """Operator and service-to-service management of accounts."""

    def __init__(self, uow: UowFactory, ledger: LedgerService, clock: Clock = utc_now) -> None:
        self._ledger = ledger
        self._now = clock
        self._transactions = Transactions(uow, clock=clock)
        self._search = AccountSearch(uow)

    async def search_accounts(
        self, account_id: str | None, customer_id: str | None, requested_size: int, page_token: str
    ) -> tuple[list[Account], str]:
        """Accounts for operators: one, a customer's, or all; oldest first, with their totals."""
        return await self._search.search(account_id, customer_id, requested_size, page_token)

    async def open_account(self, command: OpenAccountCommand) -> Account:
        """Open an account (ACTIVE, zero balance); a replay returns the first answer."""
        validate_request_id(command.request_id)
        command.validate()
        fingerprint = request_fingerprint(command={**command.__dict__, "request_id": None})
        if command.type is not AccountType.BANK_EQUITY:
            # Money enters a currency through its equity account: make sure it exists.
            await self._ledger.ensure_equity_account(command.currency)

        async def operation(uow: AccountUnitOfWork) -> Account:
            if command.type is AccountType.BANK_EQUITY and await uow.accounts.equity_id(command.currency):
                raise AlreadyExists("the currency already has a bank equity account", reason="RESOURCE_ALREADY_EXISTS")
            account = new_account(command, uuid.uuid4().hex, self._now())
            await uow.accounts.add(account)
            audit_account(uow, "account.open", account)
            # Logged here: a replay answers from the saved key without running this.
            log.info(
                "account opened",
                extra={"account": account.id, "type": account.type.value, "currency": account.currency},
            )
            return account

        return await self._transactions.run(
            operation,
            key=IdempotencyKey(ADMIN_SCOPE, "OpenAccount", command.request_id, fingerprint),
            codec=ACCOUNT_ANSWER,
        )

    async def freeze_account(self, request_id: str, account_id: str, reason: str = "") -> Account:
        """ACTIVE -> FROZEN (holds may still be voided or expire)."""
        account = await self._transition(
            "FreezeAccount", request_id, account_id, Account.freeze, action="account.freeze", reason=reason
        )
        log.info("account frozen", extra={"account": account_id, "reason": reason[:500]})
        return account

    async def unfreeze_account(self, request_id: str, account_id: str) -> Account:
        """FROZEN -> ACTIVE."""
        account = await self._transition(
            "UnfreezeAccount", request_id, account_id, Account.unfreeze, action="account.unfreeze"
        )
        log.info("account unfrozen", extra={"account": account_id})
        return account

    async def close_account(self, request_id: str, account_id: str) -> Account:
        """-> CLOSED, only with a zero balance and no hold."""
        account = await self._transition("CloseAccount", request_id, account_id, Account.close, action="account.close")
        log.info("account closed", extra={"account": account_id})
        return account

    async def _transition(
        self,
        method: str,
        request_id: str,
        account_id: str,
        change: Callable[[Account, dt.datetime], None],
        *,
        action: str,
        reason: str = "",
    ) -> Account:
        validate_request_id(request_id)
        fingerprint = request_fingerprint(account=account_id)

        async def operation(uow: AccountUnitOfWork) -> Account:
            locked = await uow.accounts.lock([account_id])
            # The key is read under the account's lock, not by the runner before it: a concurrent
            # twin waits for the lock, then replays (instead of failing the transition again).
            saved = await uow.idempotency.lookup(ADMIN_SCOPE, method, request_id, fingerprint)
            if saved is not None:
                return ACCOUNT_ANSWER.decode(saved)
            account = locked.get(account_id)
            if account is None:
                raise account_not_found(account_id)
            now = self._now()
            change(account, now)
            await uow.accounts.save(account)
            audit_account(uow, action, account, reason=reason)
            await uow.idempotency.save(
                ADMIN_SCOPE, method, request_id, fingerprint, ACCOUNT_ANSWER.encode(account), now
            )
            return account

        return await self._transactions.run(operation)

    async def ledger_totals(self) -> tuple[list[CurrencyTotals], dt.datetime]:
        """Per-currency sums of every account, read in one snapshot."""

        async def operation(uow: AccountUnitOfWork) -> tuple[list[CurrencyTotals], dt.datetime]:
            read_time = self._now()
            return await uow.accounts.totals(), read_time

        return await self._transactions.read(operation)
