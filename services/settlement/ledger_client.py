"""The gRPC adapter of settlement's two ledger ports, on account's ``LedgerService``:
:class:`~services.settlement.reconciliation_service.LedgerReader` (``ListTransfers``, every
page) and :class:`~services.settlement.settle_service.SettlementPoster`
(``CreateLinkedTransfers``: a window's settlement legs, all or none).

Calls go through a :class:`~meshlib.clients.PeerCaller` (settlement's service token, or
the operator's own one forwarded; see ``bootstrap.ledger_token_source``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import grpc
from google.protobuf import timestamp_pb2

from meshlib.clients import Bearer, PeerCaller
from meshlib.errors import FailedPrecondition, InvalidArgument, MeshError, Unavailable
from meshlib.money import Amount
from openbank.account.v1 import ledger_pb2, ledger_pb2_grpc
from openbank.common.v1 import money_pb2
from services.settlement.domain.reconciliation import LedgerTransfer
from services.settlement.domain.settlement_legs import SettlementLeg

PAGE_SIZE = 500
CALL_TIMEOUT_SECONDS = 10.0


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value.astimezone(dt.UTC))
    return stamp


def transfer_from_proto(transfer: ledger_pb2.Transfer) -> LedgerTransfer:
    """The ledger's transfer as reconciliation sees it."""
    return LedgerTransfer(
        name=transfer.name,
        debit_account=transfer.debit_account,
        credit_account=transfer.credit_account,
        amount=Amount(transfer.amount.currency_code, transfer.amount.minor_units),
        posted=transfer.state == ledger_pb2.TRANSFER_STATE_POSTED,
        reference=transfer.reference,
        created_at=transfer.create_time.ToDatetime(dt.UTC) if transfer.HasField("create_time") else None,
    )


def leg_to_proto(leg: SettlementLeg) -> ledger_pb2.CreateTransferRequest:
    """A settlement leg as a single-phase transfer of the chain (its id is its request_id)."""
    return ledger_pb2.CreateTransferRequest(
        request_id=leg.transfer_id,
        debit_account=leg.debit_account,
        credit_account=leg.credit_account,
        amount=money_pb2.Money(currency_code=leg.amount.currency, minor_units=leg.amount.minor_units),
        type=ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
        reference=leg.reference,
        description=leg.description,
    )


_LEG_FIELD = re.compile(r"requests\[(\d+)\]")


def _leg_index(error: InvalidArgument) -> str:
    """The index of the leg an INVALID_ARGUMENT names (``requests[i].<field>``), or ""."""
    found = _LEG_FIELD.match(error.violations[0].field) if error.violations else None
    return found.group(1) if found else ""


def _refused_leg(error: MeshError, legs: Sequence[SettlementLeg], index: str) -> MeshError:
    """The ledger's refusal of a chain, naming the participant whose leg it was."""
    if index.isdigit() and int(index) < len(legs):
        error.metadata["participant"] = f"participants/{legs[int(index)].participant_id}"
    return error


class GrpcLedger:
    """Reads ledger transfers and posts settlement chains over gRPC."""

    def __init__(self, channel: grpc.aio.Channel, bearer: Bearer) -> None:
        self._stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        self._call = PeerCaller(bearer, deadline_seconds=CALL_TIMEOUT_SECONDS)

    async def transfers_for_payments(self, payment_ids: Sequence[str]) -> dict[str, list[LedgerTransfer]]:
        """The transfers referencing each payment."""
        found: dict[str, list[LedgerTransfer]] = {}
        for payment_id in payment_ids:
            found[payment_id] = await self._list(ledger_pb2.ListTransfersRequest(reference=f"payments/{payment_id}"))
        return found

    async def transfers_for_account(self, account: str, start: dt.datetime, end: dt.datetime) -> list[LedgerTransfer]:
        """The transfers on ``account`` created in [start, end)."""
        return await self._list(
            ledger_pb2.ListTransfersRequest(
                account=account, from_create_time=_timestamp(start), to_create_time=_timestamp(end)
            )
        )

    async def transfers_for_reference(self, reference: str) -> list[LedgerTransfer]:
        """The transfers whose reference is exactly ``reference``."""
        return await self._list(ledger_pb2.ListTransfersRequest(reference=reference))

    async def post_linked(self, request_id: str, legs: Sequence[SettlementLeg]) -> list[str]:
        """Post the legs as one linked chain; the transfers' names, in leg order.

        The ledger's refusal of a leg keeps its code and reason and gains ErrorInfo
        metadata ``participant``: whose leg it was.
        """
        request = ledger_pb2.CreateLinkedTransfersRequest(
            request_id=request_id, requests=[leg_to_proto(leg) for leg in legs]
        )
        try:
            response = await self._call(self._stub.CreateLinkedTransfers, request, "ledger.CreateLinkedTransfers")
        except InvalidArgument as error:
            # The settle request was valid: a leg the ledger finds malformed (an account in another
            # currency) is a settlement account that does not fit, a precondition.
            raise _refused_leg(
                FailedPrecondition(error.message, reason=error.reason), legs, _leg_index(error)
            ) from None
        except MeshError as error:
            raise _refused_leg(error, legs, error.metadata.get("index", "")) from None
        return [transfer.name for transfer in response.transfers]

    async def _list(self, request: ledger_pb2.ListTransfersRequest) -> list[LedgerTransfer]:
        request.page_size = PAGE_SIZE
        transfers: list[LedgerTransfer] = []
        while True:
            try:
                response = await self._call(self._stub.ListTransfers, request, "ledger.ListTransfers")
            except Unavailable:  # down, or out of time: either way reconciliation cannot finish
                raise Unavailable("the account ledger is unreachable") from None
            transfers.extend(transfer_from_proto(t) for t in response.transfers)
            if not response.next_page_token:
                return transfers
            request.page_token = response.next_page_token
