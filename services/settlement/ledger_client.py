"""The gRPC adapter of the :class:`LedgerReader` port: account's ``LedgerService.ListTransfers``.

Calls go through a :class:`~meshlib.clients.PeerCaller` (settlement's service token, or
the operator's own one forwarded; see ``bootstrap.ledger_token_source``) and page through
every result.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import grpc
from google.protobuf import timestamp_pb2

from meshlib.clients import Bearer, PeerCaller
from meshlib.errors import Unavailable
from meshlib.money import Amount
from openbank.account.v1 import ledger_pb2, ledger_pb2_grpc
from services.settlement.domain.reconciliation import LedgerTransfer

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


class GrpcLedgerReader:
    """Lists ledger transfers over gRPC."""

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
