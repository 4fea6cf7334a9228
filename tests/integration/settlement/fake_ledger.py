"""A fake account ``LedgerService`` over real gRPC for settlement's own tests: ListTransfers from
a list, and CreateLinkedTransfers adding a chain's legs (idempotent by the chain's request_id
and each leg's id). Tests that need the ledger's rules run the real account service
(``test_settle_over_grpc.py``)."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator

import grpc
from google.protobuf import timestamp_pb2

from openbank.account.v1 import ledger_pb2, ledger_pb2_grpc


class FakeLedgerService(ledger_pb2_grpc.LedgerServiceServicer):
    """Serves ListTransfers from a list (filters by reference, account and time; two per page)."""

    def __init__(self) -> None:
        self.transfers: list[ledger_pb2.Transfer] = []
        self.tokens: set[str] = set()
        self.chains: dict[str, ledger_pb2.CreateLinkedTransfersRequest] = {}

    async def ListTransfers(self, request, context):  # type: ignore[no-untyped-def]
        self.tokens.update(v for k, v in context.invocation_metadata() if k == "authorization")
        matching = [
            t
            for t in self.transfers
            if (not request.reference or t.reference == request.reference)
            and (not request.account or request.account in (t.debit_account, t.credit_account))
            and (
                not request.HasField("from_create_time")
                or t.create_time.ToDatetime() >= request.from_create_time.ToDatetime()
            )
            and (
                not request.HasField("to_create_time")
                or t.create_time.ToDatetime() < request.to_create_time.ToDatetime()
            )
        ]
        start = int(request.page_token or 0)
        page = matching[start : start + 2]
        more = start + 2 < len(matching)
        return ledger_pb2.ListTransfersResponse(transfers=page, next_page_token=str(start + 2) if more else "")

    async def CreateLinkedTransfers(self, request, context):  # type: ignore[no-untyped-def]
        self.tokens.update(v for k, v in context.invocation_metadata() if k == "authorization")
        known = self.chains.setdefault(request.request_id, request)
        if known != request:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, "request_id reused")
        now = timestamp_pb2.Timestamp()
        now.FromDatetime(dt.datetime.now(dt.UTC))
        existing = {t.name: t for t in self.transfers}
        answer = []
        for leg in request.requests:
            name = f"transfers/{leg.request_id}"
            if name not in existing:
                existing[name] = ledger_pb2.Transfer(
                    name=name,
                    debit_account=leg.debit_account,
                    credit_account=leg.credit_account,
                    amount=leg.amount,
                    type=leg.type,
                    state=ledger_pb2.TRANSFER_STATE_POSTED,
                    reference=leg.reference,
                    description=leg.description,
                    create_time=now,
                    update_time=now,
                )
                self.transfers.append(existing[name])
            answer.append(existing[name])
        return ledger_pb2.CreateLinkedTransfersResponse(transfers=answer)

    def legs(self, window: str) -> list[tuple[str, str, int]]:
        """(debit, credit, minor units) of the transfers referencing ``window``."""
        return [
            (t.debit_account, t.credit_account, t.amount.minor_units) for t in self.transfers if t.reference == window
        ]


@contextlib.asynccontextmanager
async def serving_fake_ledger() -> AsyncIterator[tuple[FakeLedgerService, int]]:
    """A fake account LedgerService on port 0: (its servicer, its port)."""
    servicer = FakeLedgerService()
    server = grpc.aio.server()
    ledger_pb2_grpc.add_LedgerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, port
    finally:
        await server.stop(0)
