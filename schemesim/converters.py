"""Protobuf <-> the simulator's domain: request checks (FIELD_INVALID naming each field) and
status reports and returns as messages."""

from __future__ import annotations

import datetime as dt

from google.protobuf import timestamp_pb2

from meshlib.errors import FieldCollector, InvalidArgument
from meshlib.iban import iban_problem, is_bic
from meshlib.idempotency import fingerprint
from meshlib.money import amount_from_fields
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint, page_size
from openbank.common.v1 import money_pb2
from openbank.scheme.v1 import scheme_pb2
from schemesim.domain.transfers import (
    MESSAGE_ID_PATTERN,
    AccountId,
    AccountKind,
    CreditTransfer,
    PaymentReturn,
    Status,
    StatusReport,
)

STATUSES = {
    Status.ACCEPTED: scheme_pb2.TRANSACTION_STATUS_ACCEPTED,
    Status.SETTLED: scheme_pb2.TRANSACTION_STATUS_SETTLED,
    Status.REJECTED: scheme_pb2.TRANSACTION_STATUS_REJECTED,
}
_CURSOR_DIGITS = 18  # a feed position fits in a signed 64-bit integer


def message_id(value: str, field: str, errors: FieldCollector) -> str:
    """A message id: 1..35 characters of [A-Za-z0-9._:-]."""
    errors.check(bool(MESSAGE_ID_PATTERN.match(value)), field, "must be 1-35 characters of A-Z a-z 0-9 . _ : -")
    return value


def _required(value: str, field: str, errors: FieldCollector) -> str:
    errors.check(bool(value.strip()), field, "required")
    return value


def _account(message: scheme_pb2.AccountIdentification, field: str, errors: FieldCollector) -> AccountId:
    which = message.WhichOneof("identification")
    if which == "iban" and message.iban:
        return AccountId(AccountKind.IBAN, message.iban)
    if which == "scheme_account_id" and message.scheme_account_id:
        return AccountId(AccountKind.SCHEME, message.scheme_account_id)
    errors.add(field, "required: an iban or a scheme_account_id")
    return AccountId(AccountKind.SCHEME, "")


def submission(request: scheme_pb2.SubmitCreditTransferRequest) -> tuple[str, CreditTransfer, str]:
    """(message id, transfer, fingerprint of the transfer) of a submission.

    The message's shape is checked here (INVALID_ARGUMENT); what concerns the creditor (its
    IBAN, its agent's BIC) is the scheme's business decision (a rejection), left to the rules.
    """
    errors = FieldCollector()
    message = message_id(request.request_id, "request_id", errors)
    if not request.HasField("credit_transfer"):
        errors.add("credit_transfer", "required")
        errors.raise_if_any()
    source = request.credit_transfer
    prefix = "credit_transfer."
    _required(source.end_to_end_id, f"{prefix}end_to_end_id", errors)
    amount = None
    if source.HasField("instructed_amount"):
        money = source.instructed_amount
        amount = amount_from_fields(money.currency_code, money.minor_units, f"{prefix}instructed_amount", errors)
    else:
        errors.add(f"{prefix}instructed_amount", "required")
    _required(source.debtor_name, f"{prefix}debtor_name", errors)
    _required(source.creditor_name, f"{prefix}creditor_name", errors)
    debtor = _account(source.debtor_account, f"{prefix}debtor_account", errors)
    if debtor.kind is AccountKind.IBAN and (problem := iban_problem(debtor.value)):
        errors.add(f"{prefix}debtor_account.iban", problem)
    errors.check(is_bic(source.debtor_agent), f"{prefix}debtor_agent", "must be a BIC (ISO 9362, 8 or 11 characters)")
    creditor = _account(source.creditor_account, f"{prefix}creditor_account", errors)
    _required(source.creditor_agent, f"{prefix}creditor_agent", errors)
    errors.raise_if_any()
    assert amount is not None
    transfer = CreditTransfer(
        end_to_end_id=source.end_to_end_id,
        amount=amount,
        debtor_name=source.debtor_name,
        debtor_account=debtor,
        debtor_agent=source.debtor_agent,
        creditor_name=source.creditor_name,
        creditor_account=creditor,
        creditor_agent=source.creditor_agent,
        remittance_information=source.remittance_information,
    )
    return message, transfer, fingerprint(source, ignore=())


def status_request(request: scheme_pb2.GetCreditTransferStatusRequest) -> str:
    """The message id asked about."""
    errors = FieldCollector()
    found = message_id(request.message_id, "message_id", errors)
    errors.raise_if_any()
    return found


def cursor_text(sequence: int) -> str:
    """A feed position as the opaque cursor callers keep."""
    return str(sequence)


def returns_request(request: scheme_pb2.ListReturnsRequest) -> tuple[int, int, str]:
    """(position to list after, page size, filters hash) of a ListReturns request."""
    after = 0
    if request.after_cursor:
        if not request.after_cursor.isdigit() or len(request.after_cursor) > _CURSOR_DIGITS:
            raise InvalidArgument.field("after_cursor", "not a cursor of this feed")
        after = int(request.after_cursor)
    size = page_size(request.page_size)
    filters = filter_fingerprint(after_cursor=request.after_cursor)
    cursor = decode_page_token(request.page_token, filters)
    if cursor is not None:
        seq = cursor.get("seq")
        if not isinstance(seq, int) or seq < after:
            raise InvalidArgument.field("page_token", "not a token this server issued", reason="PAGE_TOKEN_INVALID")
        after = seq
    return after, size, filters


def next_page_token(returns: list[PaymentReturn], size: int, filters: str) -> str:
    """A token after the page's last return when the page is full (there may be more)."""
    if len(returns) < size or not returns or returns[-1].sequence is None:
        return ""
    return encode_page_token({"seq": returns[-1].sequence}, filters)


def _timestamp(value: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp


def payment_return(item: PaymentReturn) -> scheme_pb2.PaymentReturn:
    """A return (pacs.004) as a message; its cursor when it is in the feed."""
    return scheme_pb2.PaymentReturn(
        return_id=item.return_id,
        original_message_id=item.message_id,
        original_end_to_end_id=item.end_to_end_id,
        returned_amount=money_pb2.Money(currency_code=item.amount.currency, minor_units=item.amount.minor_units),
        reason_code=item.reason_code,
        reason_message=item.reason_message,
        return_time=_timestamp(item.returned_at),
        cursor=cursor_text(item.sequence) if item.sequence is not None else "",
    )


def status_report(report: StatusReport) -> scheme_pb2.StatusReport:
    """A status report (pacs.002) as a message."""
    return scheme_pb2.StatusReport(
        original_message_id=report.message_id,
        original_end_to_end_id=report.end_to_end_id,
        status=STATUSES[report.status],
        iso20022_status=report.status.value,
        reason_code=report.reason_code,
        reason_message=report.reason_message,
        clearing_reference=report.clearing_reference,
        acceptance_time=_timestamp(report.accepted_at),
        settlement_time=_timestamp(report.settled_at),
        payment_return=payment_return(report.payment_return) if report.payment_return is not None else None,
    )
