"""gRPC servicers for the account service: protobuf in, protobuf out, nothing else."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from meshlib.auth.context import require_caller
from meshlib.errors import MeshError
from meshlib.names import parse_name
from meshlib.pagination import page_size
from meshlib.request_text import check_request_text
from openbank.account.v1 import (
    account_admin_pb2,
    account_admin_pb2_grpc,
    account_pb2,
    account_pb2_grpc,
    ledger_pb2,
    ledger_pb2_grpc,
)
from services.account import converters
from services.account.admin_service import AccountAdminService
from services.account.batches import FinishRequest
from services.account.domain.ledger import TransferRequest
from services.account.ledger_service import LedgerService
from services.account.read_service import AccountReadService, ConsentCaller

Context = grpc.aio.ServicerContext


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    """Internal ledger rpcs (scopes checked by the auth interceptor)."""

    def __init__(self, ledger: LedgerService) -> None:
        self._ledger = ledger

    async def CreateTransfer(
        self, request: ledger_pb2.CreateTransferRequest, context: Context
    ) -> ledger_pb2.CreateTransferResponse:
        """Create a single-phase or pending transfer."""
        transfer = await self._ledger.create_transfer(converters.transfer_request(request))
        return ledger_pb2.CreateTransferResponse(transfer=converters.transfer_to_proto(transfer))

    async def PostTransfer(
        self, request: ledger_pb2.PostTransferRequest, context: Context
    ) -> ledger_pb2.PostTransferResponse:
        """Post a hold."""
        transfer = await self._ledger.post_transfer(request.request_id, converters.transfer_id_from(request.name))
        return ledger_pb2.PostTransferResponse(transfer=converters.transfer_to_proto(transfer))

    async def VoidTransfer(
        self, request: ledger_pb2.VoidTransferRequest, context: Context
    ) -> ledger_pb2.VoidTransferResponse:
        """Void a hold."""
        transfer = await self._ledger.void_transfer(request.request_id, converters.transfer_id_from(request.name))
        return ledger_pb2.VoidTransferResponse(transfer=converters.transfer_to_proto(transfer))

    async def GetLedgerAccount(
        self, request: ledger_pb2.GetLedgerAccountRequest, context: Context
    ) -> ledger_pb2.GetLedgerAccountResponse:
        """Read an account's owner, currency, type and status."""
        account = await self._ledger.get_account(converters.account_id_from(request.name, "name"))
        return ledger_pb2.GetLedgerAccountResponse(account=converters.account_to_proto(account))

    async def GetTransfer(
        self, request: ledger_pb2.GetTransferRequest, context: Context
    ) -> ledger_pb2.GetTransferResponse:
        """Read a transfer."""
        transfer = await self._ledger.get_transfer(converters.transfer_id_from(request.name))
        return ledger_pb2.GetTransferResponse(transfer=converters.transfer_to_proto(transfer))

    async def ListTransfers(
        self, request: ledger_pb2.ListTransfersRequest, context: Context
    ) -> ledger_pb2.ListTransfersResponse:
        """List transfers, newest first."""
        size = page_size(request.page_size)
        page = await self._ledger.list_transfers(converters.transfer_filter(request), size, request.page_token)
        return ledger_pb2.ListTransfersResponse(
            transfers=[converters.transfer_to_proto(t) for t in page.transfers], next_page_token=page.next_page_token
        )

    async def BatchCreateTransfers(
        self, request: ledger_pb2.BatchCreateTransfersRequest, context: Context
    ) -> ledger_pb2.BatchCreateTransfersResponse:
        """Create many transfers in one transaction, one result each."""
        items: list[TransferRequest | MeshError] = []
        for item in request.requests:
            try:
                check_request_text(item)  # each item alone, as CreateTransfer checks its request
                items.append(converters.transfer_request(item))
            except MeshError as error:
                items.append(error)
        results = await self._ledger.batch_create(request.request_id, items)
        return ledger_pb2.BatchCreateTransfersResponse(results=[converters.batch_result_to_proto(r) for r in results])

    async def CreateLinkedTransfers(
        self, request: ledger_pb2.CreateLinkedTransfersRequest, context: Context
    ) -> ledger_pb2.CreateLinkedTransfersResponse:
        """Create a chain of transfers in one transaction: every leg or none."""
        legs: list[TransferRequest | MeshError] = []
        for item in request.requests:
            try:
                legs.append(converters.transfer_request(item))
            except MeshError as error:  # fails the whole chain, naming the leg
                legs.append(error)
        transfers = await self._ledger.create_linked(request.request_id, legs)
        return ledger_pb2.CreateLinkedTransfersResponse(transfers=[converters.transfer_to_proto(t) for t in transfers])

    async def BatchPostTransfers(
        self, request: ledger_pb2.BatchPostTransfersRequest, context: Context
    ) -> ledger_pb2.BatchPostTransfersResponse:
        """Post many holds in one transaction, one result each."""
        items: list[FinishRequest | MeshError] = []
        for item in request.requests:
            try:
                check_request_text(item)  # each item alone, as PostTransfer checks its request
                items.append(converters.finish_request(item))
            except MeshError as error:
                items.append(error)
        results = await self._ledger.batch_post(request.request_id, items)
        return ledger_pb2.BatchPostTransfersResponse(
            results=[converters.batch_post_result_to_proto(r) for r in results]
        )

    async def PostLinkedTransfers(
        self, request: ledger_pb2.PostLinkedTransfersRequest, context: Context
    ) -> ledger_pb2.PostLinkedTransfersResponse:
        """Post a chain of holds in one transaction: every hold or none."""
        transfers = await self._ledger.post_linked(request.request_id, _finish_items(request.requests))
        return ledger_pb2.PostLinkedTransfersResponse(transfers=[converters.transfer_to_proto(t) for t in transfers])

    async def VoidLinkedTransfers(
        self, request: ledger_pb2.VoidLinkedTransfersRequest, context: Context
    ) -> ledger_pb2.VoidLinkedTransfersResponse:
        """Void a chain of holds in one transaction: every hold or none."""
        transfers = await self._ledger.void_linked(request.request_id, _finish_items(request.requests))
        return ledger_pb2.VoidLinkedTransfersResponse(transfers=[converters.transfer_to_proto(t) for t in transfers])

    async def BatchGetLedgerAccounts(
        self, request: ledger_pb2.BatchGetLedgerAccountsRequest, context: Context
    ) -> ledger_pb2.BatchGetLedgerAccountsResponse:
        """Read many accounts in one query, one result each."""
        results = await self._ledger.batch_get_accounts(converters.account_ids_or_errors(request.names))
        return ledger_pb2.BatchGetLedgerAccountsResponse(
            results=[converters.account_result_to_proto(r) for r in results]
        )


def _finish_items(
    requests: Iterable[ledger_pb2.PostTransferRequest | ledger_pb2.VoidTransferRequest],
) -> list[FinishRequest | MeshError]:
    """A chain's items (its text was checked with the whole request); a malformed name fails the
    chain, naming the item."""
    items: list[FinishRequest | MeshError] = []
    for item in requests:
        try:
            items.append(converters.finish_request(item))
        except MeshError as error:
            items.append(error)
    return items


class AccountAdminServicer(account_admin_pb2_grpc.AccountAdminServiceServicer):
    """Internal account administration."""

    def __init__(self, admin: AccountAdminService, ledger: LedgerService) -> None:
        self._admin = admin
        self._ledger = ledger

    async def OpenAccount(
        self, request: account_admin_pb2.OpenAccountRequest, context: Context
    ) -> account_admin_pb2.OpenAccountResponse:
        """Open an account."""
        account = await self._admin.open_account(converters.open_account_command(request))
        return account_admin_pb2.OpenAccountResponse(account=converters.account_to_proto(account))

    async def FundAccount(
        self, request: account_admin_pb2.FundAccountRequest, context: Context
    ) -> account_admin_pb2.FundAccountResponse:
        """Credit an account from the bank equity account."""
        account_id = converters.account_id_from(request.account, "account")
        amount = converters.positive_amount(request.amount, request.HasField("amount"))
        transfer = await self._ledger.fund_account(request.request_id, account_id, amount, request.description)
        return account_admin_pb2.FundAccountResponse(transfer=converters.transfer_to_proto(transfer))

    async def FreezeAccount(
        self, request: account_admin_pb2.FreezeAccountRequest, context: Context
    ) -> account_admin_pb2.FreezeAccountResponse:
        """Freeze an account."""
        account = await self._admin.freeze_account(
            request.request_id, converters.account_id_from(request.name, "name"), request.reason
        )
        return account_admin_pb2.FreezeAccountResponse(account=converters.account_to_proto(account))

    async def UnfreezeAccount(
        self, request: account_admin_pb2.UnfreezeAccountRequest, context: Context
    ) -> account_admin_pb2.UnfreezeAccountResponse:
        """Unfreeze an account."""
        account_id = converters.account_id_from(request.name, "name")
        account = await self._admin.unfreeze_account(request.request_id, account_id)
        return account_admin_pb2.UnfreezeAccountResponse(account=converters.account_to_proto(account))

    async def CloseAccount(
        self, request: account_admin_pb2.CloseAccountRequest, context: Context
    ) -> account_admin_pb2.CloseAccountResponse:
        """Close an account."""
        account = await self._admin.close_account(request.request_id, converters.account_id_from(request.name, "name"))
        return account_admin_pb2.CloseAccountResponse(account=converters.account_to_proto(account))

    async def GetLedgerTotals(
        self, request: account_admin_pb2.GetLedgerTotalsRequest, context: Context
    ) -> account_admin_pb2.GetLedgerTotalsResponse:
        """Per-currency totals."""
        totals, read_time = await self._admin.ledger_totals()
        response = account_admin_pb2.GetLedgerTotalsResponse(totals=[converters.totals_to_proto(t) for t in totals])
        response.read_time.FromDatetime(read_time)
        return response

    async def SearchAccounts(
        self, request: account_admin_pb2.SearchAccountsRequest, context: Context
    ) -> account_admin_pb2.SearchAccountsResponse:
        """Accounts with their balances, for operators."""
        account_id = converters.account_id_from(request.name, "name") if request.name else None
        customer_id = parse_name(request.customer, "customers", "customer") if request.customer else None
        page, token = await self._admin.search_accounts(account_id, customer_id, request.page_size, request.page_token)
        return account_admin_pb2.SearchAccountsResponse(
            accounts=[
                account_admin_pb2.AccountSummary(
                    account=converters.account_to_proto(account), balance=converters.balance_to_proto(account)
                )
                for account in page
            ],
            next_page_token=token,
        )


def _consent_caller() -> ConsentCaller:
    caller = require_caller()
    return ConsentCaller(partner_id=caller.require_partner(), consent_id=caller.require_consent())


class AccountServicer(account_pb2_grpc.AccountServiceServicer):
    """Public, consent-bound reads."""

    def __init__(self, reads: AccountReadService) -> None:
        self._reads = reads

    async def ListAccounts(
        self, request: account_pb2.ListAccountsRequest, context: Context
    ) -> account_pb2.ListAccountsResponse:
        """The consent's accounts."""
        size = page_size(request.page_size)
        page = await self._reads.list_accounts(_consent_caller(), size, request.page_token)
        return account_pb2.ListAccountsResponse(
            accounts=[converters.account_to_proto(a) for a in page.accounts], next_page_token=page.next_page_token
        )

    async def GetAccount(
        self, request: account_pb2.GetAccountRequest, context: Context
    ) -> account_pb2.GetAccountResponse:
        """One account."""
        account_id = converters.account_id_from(request.name, "name")
        account = await self._reads.get_account(_consent_caller(), account_id)
        return account_pb2.GetAccountResponse(account=converters.account_to_proto(account))

    async def GetBalance(
        self, request: account_pb2.GetBalanceRequest, context: Context
    ) -> account_pb2.GetBalanceResponse:
        """One account's balance."""
        account_id = converters.account_id_from(request.account, "account")
        account = await self._reads.get_balance(_consent_caller(), account_id)
        return account_pb2.GetBalanceResponse(balance=converters.balance_to_proto(account))

    async def ListTransactions(
        self, request: account_pb2.ListTransactionsRequest, context: Context
    ) -> account_pb2.ListTransactionsResponse:
        """Statement lines, newest first."""
        account_id = converters.account_id_from(request.parent, "parent")
        size = page_size(request.page_size)
        page = await self._reads.list_transactions(
            _consent_caller(),
            account_id,
            from_time=converters.optional_time(request, "from_booking_time"),
            to_time=converters.optional_time(request, "to_booking_time"),
            size=size,
            page_token=request.page_token,
        )
        return account_pb2.ListTransactionsResponse(
            transactions=[converters.entry_to_proto(e) for e in page.entries], next_page_token=page.next_page_token
        )

    async def ConfirmFunds(
        self, request: account_pb2.ConfirmFundsRequest, context: Context
    ) -> account_pb2.ConfirmFundsResponse:
        """Whether an amount is available now."""
        account_id = converters.account_id_from(request.account, "account")
        amount = converters.positive_amount(request.amount, request.HasField("amount"))
        available = await self._reads.confirm_funds(_consent_caller(), account_id, amount)
        return account_pb2.ConfirmFundsResponse(funds_available=available)
