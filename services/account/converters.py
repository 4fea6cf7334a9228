"""Protobuf <-> domain conversions for the account service (no rules here).

Account numbers leave the service only masked (``Account.display_number``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from google.protobuf import duration_pb2, timestamp_pb2

from meshlib.errors import FieldCollector, InvalidArgument, MeshError
from meshlib.grpc_errors import encode_item_reason
from meshlib.idempotency import REQUEST_ID_PATTERN
from meshlib.money import Amount, validate_currency
from meshlib.names import parse_name
from meshlib.request_text import check_text
from openbank.account.v1 import account_admin_pb2, account_pb2, ledger_pb2
from openbank.common.v1 import money_pb2
from services.account.answers import BatchItemResult
from services.account.batches import FinishRequest
from services.account.domain.ledger import (
    Account,
    AccountType,
    Direction,
    Entry,
    EntryStatus,
    OpenAccountCommand,
    Transfer,
    TransferRequest,
    TransferType,
)
from services.account.ledger_service import AccountItemResult
from services.account.repository import CurrencyTotals, TransferFilter

_ACCOUNT_TYPES = {
    AccountType.CURRENT: account_pb2.ACCOUNT_TYPE_CURRENT,
    AccountType.SAVINGS: account_pb2.ACCOUNT_TYPE_SAVINGS,
    AccountType.SETTLEMENT: account_pb2.ACCOUNT_TYPE_SETTLEMENT,
    AccountType.BANK_EQUITY: account_pb2.ACCOUNT_TYPE_BANK_EQUITY,
    AccountType.INTEREST_INCOME: account_pb2.ACCOUNT_TYPE_INTEREST_INCOME,
}
_ACCOUNT_TYPES_IN = {value: key for key, value in _ACCOUNT_TYPES.items()}
_TRANSFER_TYPES = {
    TransferType.SINGLE_PHASE: ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
    TransferType.PENDING: ledger_pb2.TRANSFER_TYPE_PENDING,
}
_TRANSFER_TYPES_IN = {value: key for key, value in _TRANSFER_TYPES.items()}
_DIRECTIONS = {
    Direction.CREDIT: account_pb2.CREDIT_DEBIT_INDICATOR_CREDIT,
    Direction.DEBIT: account_pb2.CREDIT_DEBIT_INDICATOR_DEBIT,
}
_ENTRY_STATUSES = {
    EntryStatus.BOOKED: account_pb2.TRANSACTION_STATUS_BOOKED,
    EntryStatus.PENDING: account_pb2.TRANSACTION_STATUS_PENDING,
}


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp


def _money(currency: str, minor_units: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code=currency, minor_units=minor_units)


def account_name(account_id: str) -> str:
    """``accounts/{id}``."""
    return f"accounts/{account_id}"


# ---- requests in ----


def account_id_from(name: str, field: str, errors: FieldCollector | None = None) -> str:
    """The id inside ``accounts/{id}``; INVALID_ARGUMENT naming ``field`` when malformed."""
    return parse_name(name, "accounts", field, errors)


def account_ids_or_errors(names: Iterable[str]) -> list[str | MeshError]:
    """The names of BatchGetLedgerAccounts, each as its account id or the error GetLedgerAccount gives it.

    A malformed name fails only its own item, with GetLedgerAccount's very error (naming
    ``name``), so a caller that coalesced single reads hands each its own answer.
    """
    items: list[str | MeshError] = []
    for name in names:
        try:
            check_text(name, "name")  # as GetLedgerAccount checks its name
            items.append(account_id_from(name, "name"))
        except MeshError as error:
            items.append(error)
    return items


def transfer_id_from(name: str, field: str = "name") -> str:
    """The id inside ``transfers/{id}`` (ids are request ids: ``[A-Za-z0-9._:-]{1,64}``)."""
    transfer_id = name.removeprefix("transfers/") if name.startswith("transfers/") else ""
    if not REQUEST_ID_PATTERN.match(transfer_id):
        raise InvalidArgument.field(field, "must look like transfers/{transfer}")
    return transfer_id


def optional_time(message: object, field: str) -> dt.datetime | None:
    """A Timestamp field as an aware datetime, or None when unset."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    return getattr(message, field).ToDatetime(tzinfo=dt.UTC)


def amount_from(money: money_pb2.Money, field: str, errors: FieldCollector) -> Amount | None:
    """A Money field as an Amount with a supported currency (sign checks are the domain's)."""
    if not validate_currency(money.currency_code, f"{field}.currency_code", errors):
        return None
    return Amount(money.currency_code, money.minor_units)


def transfer_request(request: ledger_pb2.CreateTransferRequest) -> TransferRequest:
    """A CreateTransfer request as a domain request; INVALID_ARGUMENT naming every bad field."""
    errors = FieldCollector()
    debit = account_id_from(request.debit_account, "debit_account", errors)
    credit = account_id_from(request.credit_account, "credit_account", errors)
    amount = amount_from(request.amount, "amount", errors) if request.HasField("amount") else None
    if not request.HasField("amount"):
        errors.add("amount", "required")
    transfer_type = _TRANSFER_TYPES_IN.get(request.type)
    if transfer_type is None:
        errors.add("type", "must be SINGLE_PHASE or PENDING")
    errors.raise_if_any()
    assert amount is not None and transfer_type is not None
    timeout = request.timeout.ToTimedelta() if request.HasField("timeout") else None
    return TransferRequest(
        transfer_id=request.request_id,
        debit_account_id=debit,
        credit_account_id=credit,
        amount=amount,
        type=transfer_type,
        timeout=timeout,
        reference=request.reference,
        description=request.description,
    )


def finish_request(request: ledger_pb2.PostTransferRequest | ledger_pb2.VoidTransferRequest) -> FinishRequest:
    """One item of BatchPostTransfers (its request_id is checked by the service, as PostTransfer's)."""
    return FinishRequest(request_id=request.request_id, transfer_id=transfer_id_from(request.name))


def transfer_filter(request: ledger_pb2.ListTransfersRequest) -> TransferFilter:
    """ListTransfers filters."""
    return TransferFilter(
        account_id=account_id_from(request.account, "account") if request.account else None,
        reference=request.reference or None,
        from_time=optional_time(request, "from_create_time"),
        to_time=optional_time(request, "to_create_time"),
    )


def open_account_command(request: account_admin_pb2.OpenAccountRequest) -> OpenAccountCommand:
    """An OpenAccount request as a domain command."""
    errors = FieldCollector()
    customer = parse_name(request.customer, "customers", "customer", errors) if request.customer else None
    overdraft = (
        amount_from(request.overdraft_limit, "overdraft_limit", errors) if request.HasField("overdraft_limit") else None
    )
    errors.raise_if_any()
    return OpenAccountCommand(
        request_id=request.request_id,
        customer_id=customer,
        currency=request.currency_code,
        type=_ACCOUNT_TYPES_IN.get(request.type),
        overdraft_limit=overdraft,
        display_name=request.display_name,
    )


def positive_amount(money: money_pb2.Money, has_amount: bool, field: str = "amount") -> Amount:
    """A required, positive amount."""
    errors = FieldCollector()
    if not has_amount:
        errors.add(field, "required")
        errors.raise_if_any()
    amount = amount_from(money, field, errors)
    if money.minor_units <= 0:
        errors.add(f"{field}.minor_units", "must be greater than zero")
    errors.raise_if_any()
    assert amount is not None
    return amount


# ---- responses out ----


def account_to_proto(account: Account) -> account_pb2.Account:
    """An Account message; the number only masked."""
    message = account_pb2.Account(
        name=account_name(account.id),
        display_number=account.display_number,
        currency_code=account.currency,
        type=_ACCOUNT_TYPES[account.type],
        status=account_pb2.AccountStatus.Value(f"ACCOUNT_STATUS_{account.status.value}"),
        customer=f"customers/{account.customer_id}" if account.customer_id else "",
        display_name=account.display_name,
        open_time=_timestamp(account.opened_at),
    )
    if account.overdraft_limit:
        message.overdraft_limit.CopyFrom(_money(account.currency, account.overdraft_limit))
    return message


def balance_to_proto(account: Account) -> account_pb2.Balance:
    """The Balance message derived from an account's running totals."""
    currency = account.currency
    return account_pb2.Balance(
        account=account_name(account.id),
        posted_debits=_money(currency, account.debits_posted),
        posted_credits=_money(currency, account.credits_posted),
        pending_debits=_money(currency, account.debits_pending),
        pending_credits=_money(currency, account.credits_pending),
        current=_money(currency, account.current),
        available=_money(currency, account.available),
        update_time=_timestamp(account.updated_at),
    )


def entry_to_proto(entry: Entry) -> account_pb2.Transaction:
    """A statement line as a Transaction message."""
    return account_pb2.Transaction(
        name=f"accounts/{entry.account_id}/transactions/{entry.seq}",
        transfer=f"transfers/{entry.transfer_id}",
        amount=_money(entry.currency, entry.amount),
        credit_debit_indicator=_DIRECTIONS[entry.direction],
        status=_ENTRY_STATUSES[entry.status],
        booking_time=_timestamp(entry.booking_time),
        value_time=_timestamp(entry.booking_time),
        reference=entry.reference,
        description=entry.description,
    )


def transfer_to_proto(transfer: Transfer) -> ledger_pb2.Transfer:
    """A Transfer message."""
    message = ledger_pb2.Transfer(
        name=f"transfers/{transfer.id}",
        debit_account=account_name(transfer.debit_account_id),
        credit_account=account_name(transfer.credit_account_id),
        amount=_money(transfer.currency, transfer.amount),
        type=_TRANSFER_TYPES[transfer.type],
        state=ledger_pb2.TransferState.Value(f"TRANSFER_STATE_{transfer.state.value}"),
        reference=transfer.reference,
        description=transfer.description,
        create_time=_timestamp(transfer.created_at),
        update_time=_timestamp(transfer.updated_at),
    )
    if transfer.timeout is not None:
        timeout = duration_pb2.Duration()
        timeout.FromTimedelta(transfer.timeout)
        message.timeout.CopyFrom(timeout)
    if transfer.expires_at is not None:
        message.expire_time.CopyFrom(_timestamp(transfer.expires_at))
    return message


def _item_result(message_type: Any, index: int, reason: str | None, error_message: str, **resource: Any) -> Any:
    """A batch item's result: its resource (the one keyword, when not None) or why it was refused."""
    present = {name: value for name, value in resource.items() if value is not None}
    return message_type(index=index, error_reason=encode_item_reason(reason), error_message=error_message, **present)


def batch_result_to_proto(result: BatchItemResult) -> ledger_pb2.BatchCreateTransferResult:
    """One item's outcome."""
    transfer = transfer_to_proto(result.transfer) if result.transfer is not None else None
    return _item_result(
        ledger_pb2.BatchCreateTransferResult, result.index, result.error_reason, result.error_message, transfer=transfer
    )


def batch_post_result_to_proto(result: BatchItemResult) -> ledger_pb2.BatchPostTransferResult:
    """One post's outcome."""
    transfer = transfer_to_proto(result.transfer) if result.transfer is not None else None
    return _item_result(
        ledger_pb2.BatchPostTransferResult, result.index, result.error_reason, result.error_message, transfer=transfer
    )


def account_result_to_proto(result: AccountItemResult) -> ledger_pb2.BatchGetLedgerAccountResult:
    """One name's outcome of BatchGetLedgerAccounts."""
    account = account_to_proto(result.account) if result.account is not None else None
    return _item_result(
        ledger_pb2.BatchGetLedgerAccountResult, result.index, result.error_reason, result.error_message, account=account
    )


def totals_to_proto(totals: CurrencyTotals) -> account_admin_pb2.CurrencyTotals:
    """One currency's sums."""
    currency = totals.currency
    return account_admin_pb2.CurrencyTotals(
        currency_code=currency,
        account_count=totals.account_count,
        posted_debits=_money(currency, totals.debits_posted),
        posted_credits=_money(currency, totals.credits_posted),
        pending_debits=_money(currency, totals.debits_pending),
        pending_credits=_money(currency, totals.credits_pending),
        net=_money(currency, totals.net),
        balanced=totals.balanced,
    )
