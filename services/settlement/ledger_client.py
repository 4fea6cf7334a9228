"""The gRPC adapter of the :class:`LedgerReader` port: account's ``LedgerService.ListTransfers``.

It authenticates with a bearer token from ``token_provider`` (for now the operator's own
token, forwarded; a service token once identity issues them) and pages through every
result.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Sequence

import grpc
from google.protobuf import timestamp_pb2

from meshlib.clients import call_with_retry
from meshlib.errors import Unavailable
from meshlib.grpc_errors import decode_rpc_error
from meshlib.money import Amount
from openbank.account.v1 import ledger_pb2, ledger_pb2_grpc
from services.settlement.domain.reconciliation import LedgerTransfer

TokenProvider = Callable[[], Awaitable[str]]

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

    def __init__(self, channel: grpc.aio.Channel, token_provider: TokenProvider) -> None:
        self._stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        self._token_provider = token_provider

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
        metadata = (("authorization", f"Bearer {await self._token_provider()}"),)
        transfers: list[LedgerTransfer] = []
        while True:
            try:
                response = await call_with_retry(
                    lambda **options: self._stub.ListTransfers(
                        request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS, **options
                    ),
                    what="ledger.ListTransfers",
                )
            except grpc.aio.AioRpcError as error:
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise Unavailable("the account ledger is unreachable") from None
                raise decode_rpc_error(error) from None
            transfers.extend(transfer_from_proto(t) for t in response.transfers)
            if not response.next_page_token:
                return transfers
            request.page_token = response.next_page_token
