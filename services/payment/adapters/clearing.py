"""The outbound clearing connector: payments to other banks, through the interbank scheme.

The port, :class:`ClearingConnector`, and its value types are what the payment saga sees; the
gRPC adapter, :class:`GrpcClearingConnector`, speaks ``openbank.scheme.v1.ClearingService``
(pacs.008 / pacs.002 / pacs.004 shaped) through :class:`meshlib.clients.PeerCaller`: the
service token, a deadline, retries on UNAVAILABLE only, the scheme's error reason decoded.
(The port and its types are here until the saga uses them; they then move to ``ports.py``.)

How a caller stays safe, whatever the network does:

1. It chooses the transfer's ``message_id`` (at most 35 characters of ``[A-Za-z0-9._:-]``,
   e.g. the payment id) and stores it *before* the first :meth:`ClearingConnector.submit`.
   The scheme is idempotent by message id: submitting it again never clears it twice.
2. ``submit`` answers the acknowledgement, a :class:`ClearingReport`: ACCEPTED (settlement in
   process: ask :meth:`~ClearingConnector.status` later), SETTLED, or REJECTED with the ISO
   reason code. A rejection is an answer, not an error.
3. ``submit`` raises :class:`ClearingOutcomeUnknown` (an ``Unavailable``) when no answer came
   (deadline, connection lost, a scheme failure after which it may have stored the transfer):
   the acknowledgement was lost, not the transfer. Ask ``status(message_id)``: UNKNOWN means
   the scheme never received it (submit it again with the same message id, or give up:
   no money left); anything else is the transfer's real status.
4. ``submit`` raises the scheme's refusal of the message itself as it is (``InvalidArgument``
   FIELD_INVALID, ``AlreadyExists`` REQUEST_ID_REUSED: this message id was used for another
   transfer, ``PermissionDenied``, ``Unauthenticated``): nothing was stored; do not retry
   unchanged.
5. A settled transfer may come back days later: :meth:`~ClearingConnector.returns` reads the
   scheme's returns feed after a cursor the caller keeps (store the page's ``cursor`` once its
   returns are handled; the feed repeats nothing after it, and loses nothing before it).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import Protocol

import grpc

from meshlib.clients import PeerCaller
from meshlib.errors import (
    AlreadyExists,
    InvalidArgument,
    MeshError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from meshlib.money import Amount
from openbank.common.v1 import money_pb2
from openbank.scheme.v1 import scheme_pb2, scheme_pb2_grpc

# Scopes the payment service's token needs for the connector.
CLEARING_SCOPES = ("scheme:write", "scheme:read")


class ClearingStatus(enum.Enum):
    """A credit transfer's status in the scheme (pacs.002), or UNKNOWN to it."""

    ACCEPTED = "ACCP"  # accepted, settlement in process: ask again later
    SETTLED = "ACSC"  # final (a return may still come, see ClearingConnector.returns)
    REJECTED = "RJCT"  # final; no money moved; reason_code says why
    UNKNOWN = "UNKNOWN"  # the scheme never received it: submitting it again is safe

    @property
    def final(self) -> bool:
        """SETTLED or REJECTED: the scheme will not change its answer."""
        return self in (ClearingStatus.SETTLED, ClearingStatus.REJECTED)


class AccountKind(enum.Enum):
    """How an account is identified in the scheme."""

    IBAN = "IBAN"
    SCHEME = "SCHEME"  # an identifier of the scheme's own (ISO 20022 Othr/Id)


@dataclass(frozen=True, slots=True)
class SchemeAccount:
    """An account in the scheme: an IBAN (electronic format) or a scheme account id."""

    identifier: str
    kind: AccountKind = AccountKind.IBAN

    @classmethod
    def iban(cls, value: str) -> SchemeAccount:
        """An IBAN, as people write it or in electronic format ("de89 3704 ..." -> "DE893704...")."""
        return cls("".join(value.split()).upper(), AccountKind.IBAN)

    @classmethod
    def scheme_id(cls, value: str) -> SchemeAccount:
        """An account identifier of the scheme's own."""
        return cls(value, AccountKind.SCHEME)


@dataclass(frozen=True, slots=True)
class OutboundCreditTransfer:
    """A payment to another bank, as the scheme takes it (pacs.008)."""

    message_id: str  # chosen by the bank, stored before the first submit; the scheme's key
    end_to_end_id: str  # 1..35 characters, carried to the creditor
    amount: Amount  # positive
    debtor_name: str
    debtor_account: SchemeAccount
    debtor_agent: str  # the bank's BIC
    creditor_name: str
    creditor_account: SchemeAccount
    creditor_agent: str  # the creditor's bank's BIC
    remittance_information: str = ""


@dataclass(frozen=True, slots=True)
class ClearingReturn:
    """A settled transfer that came back (pacs.004), the whole amount."""

    return_id: str
    message_id: str  # of the returned transfer
    end_to_end_id: str
    amount: Amount
    reason_code: str  # ISO 20022 return reason, e.g. AC04, MD07
    reason_message: str
    returned_at: dt.datetime
    cursor: str  # its place in the feed; empty when read through status()


@dataclass(frozen=True, slots=True)
class ClearingReport:
    """What the scheme says of a transfer (pacs.002): the acknowledgement, or a later status."""

    message_id: str
    status: ClearingStatus
    reason_code: str = ""  # for REJECTED: ISO 20022 status reason, e.g. AC01, AC04, AM04, MS03
    reason_message: str = ""
    clearing_reference: str = ""
    accepted_at: dt.datetime | None = None
    settled_at: dt.datetime | None = None
    payment_return: ClearingReturn | None = None  # once the transfer came back

    @classmethod
    def unknown(cls, message_id: str) -> ClearingReport:
        """The report of a message id the scheme never received."""
        return cls(message_id, ClearingStatus.UNKNOWN)


@dataclass(frozen=True, slots=True)
class ReturnsPage:
    """Returns after a cursor, oldest first, and the cursor to keep once they are handled."""

    returns: tuple[ClearingReturn, ...]
    cursor: str  # the last return's cursor, or the one asked with when there are none
    more: bool  # more returns are waiting after ``cursor``: ask again at once


class ClearingOutcomeUnknown(Unavailable):
    """No answer from the scheme to a submission: the transfer may or may not be there. Ask
    :meth:`ClearingConnector.status` with the same message id (metadata ``message_id``)."""


class ClearingConnector(Protocol):
    """The scheme, as the payment saga uses it (see the module's recovery rules)."""

    async def submit(self, transfer: OutboundCreditTransfer) -> ClearingReport:
        """Send the transfer (again, if need be); its acknowledgement. Raises
        ClearingOutcomeUnknown without one, the scheme's refusal of the message as it is."""
        ...

    async def status(self, message_id: str) -> ClearingReport:
        """The transfer's current status; UNKNOWN if the scheme never received it. Raises
        Unavailable when the scheme cannot be asked now."""
        ...

    async def returns(self, after_cursor: str = "", limit: int = 100) -> ReturnsPage:
        """Up to ``limit`` returns after ``after_cursor`` (empty: from the feed's start)."""
        ...


# The scheme's answers that mean the message itself was refused, before anything was stored.
_REFUSALS = (InvalidArgument, AlreadyExists, PermissionDenied, Unauthenticated)
_STATUSES = {
    scheme_pb2.TRANSACTION_STATUS_ACCEPTED: ClearingStatus.ACCEPTED,
    scheme_pb2.TRANSACTION_STATUS_SETTLED: ClearingStatus.SETTLED,
    scheme_pb2.TRANSACTION_STATUS_REJECTED: ClearingStatus.REJECTED,
}


def _account(account: SchemeAccount) -> scheme_pb2.AccountIdentification:
    if account.kind is AccountKind.IBAN:
        return scheme_pb2.AccountIdentification(iban=account.identifier)
    return scheme_pb2.AccountIdentification(scheme_account_id=account.identifier)


def submit_request(transfer: OutboundCreditTransfer) -> scheme_pb2.SubmitCreditTransferRequest:
    """The pacs.008 of a transfer; the message id is the request_id."""
    return scheme_pb2.SubmitCreditTransferRequest(
        request_id=transfer.message_id,
        credit_transfer=scheme_pb2.CreditTransfer(
            end_to_end_id=transfer.end_to_end_id,
            instructed_amount=money_pb2.Money(
                currency_code=transfer.amount.currency, minor_units=transfer.amount.minor_units
            ),
            debtor_name=transfer.debtor_name,
            debtor_account=_account(transfer.debtor_account),
            debtor_agent=transfer.debtor_agent,
            creditor_name=transfer.creditor_name,
            creditor_account=_account(transfer.creditor_account),
            creditor_agent=transfer.creditor_agent,
            remittance_information=transfer.remittance_information,
        ),
    )


def _time(message: object, field: str) -> dt.datetime | None:
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    return getattr(message, field).ToDatetime(tzinfo=dt.UTC)


def _return(message: scheme_pb2.PaymentReturn) -> ClearingReturn:
    returned_at = _time(message, "return_time")
    return ClearingReturn(
        return_id=message.return_id,
        message_id=message.original_message_id,
        end_to_end_id=message.original_end_to_end_id,
        amount=Amount(message.returned_amount.currency_code, message.returned_amount.minor_units),
        reason_code=message.reason_code,
        reason_message=message.reason_message,
        returned_at=returned_at if returned_at is not None else dt.datetime.min.replace(tzinfo=dt.UTC),
        cursor=message.cursor,
    )


def report_of(message: scheme_pb2.StatusReport) -> ClearingReport:
    """A pacs.002 as the saga reads it."""
    status = _STATUSES.get(message.status)
    if status is None:
        raise MeshError("the scheme answered a status report without a status")
    return ClearingReport(
        message_id=message.original_message_id,
        status=status,
        reason_code=message.reason_code,
        reason_message=message.reason_message,
        clearing_reference=message.clearing_reference,
        accepted_at=_time(message, "acceptance_time"),
        settled_at=_time(message, "settlement_time"),
        payment_return=_return(message.payment_return) if message.HasField("payment_return") else None,
    )


class GrpcClearingConnector:
    """:class:`ClearingConnector` on the scheme's ClearingService over gRPC.

    ``call`` carries the payment service's token (scopes :data:`CLEARING_SCOPES`) and the
    deadline of one attempt: the longest the saga waits for an acknowledgement before it
    asks the status instead.
    """

    def __init__(self, channel: grpc.aio.Channel, call: PeerCaller) -> None:
        self._stub = scheme_pb2_grpc.ClearingServiceStub(channel)
        self._call = call

    async def submit(self, transfer: OutboundCreditTransfer) -> ClearingReport:
        """Send the pacs.008; its acknowledgement, or ClearingOutcomeUnknown without one."""
        try:
            answer = await self._call(self._stub.SubmitCreditTransfer, submit_request(transfer), "scheme.Submit")
        except _REFUSALS:
            raise
        except MeshError as error:
            raise ClearingOutcomeUnknown(
                "the scheme did not acknowledge the credit transfer; ask its status",
                metadata={"message_id": transfer.message_id, "cause": error.reason},
            ) from error
        return report_of(answer.status_report)

    async def status(self, message_id: str) -> ClearingReport:
        """The current pacs.002 of a message id; UNKNOWN when the scheme never received it."""
        request = scheme_pb2.GetCreditTransferStatusRequest(message_id=message_id)
        try:
            answer = await self._call(self._stub.GetCreditTransferStatus, request, "scheme.Status")
        except NotFound:
            return ClearingReport.unknown(message_id)
        return report_of(answer.status_report)

    async def returns(self, after_cursor: str = "", limit: int = 100) -> ReturnsPage:
        """One page of the pacs.004 feed after ``after_cursor``."""
        request = scheme_pb2.ListReturnsRequest(page_size=limit, after_cursor=after_cursor)
        answer = await self._call(self._stub.ListReturns, request, "scheme.ListReturns")
        found = tuple(_return(item) for item in answer.returns)
        return ReturnsPage(found, found[-1].cursor if found else after_cursor, more=bool(answer.next_page_token))
