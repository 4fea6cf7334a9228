"""The payments in flight share their downstream calls: each step's items leave as one batch rpc.

TigerBeetle's lesson: while one batch of a kind is in flight, the items that reach that step
wait and leave together next, so a lone payment's item leaves at once and under load batches
grow instead of calls. An item of a batch rpc is exactly the single rpc (same rules, same
per-item idempotency key), so these adapters implement the same ports as the plain ones in
``peers.py`` with the same results.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from meshlib.clients import PeerCaller
from meshlib.coalesce import Coalescer
from meshlib.errors import MeshError
from meshlib.grpc_errors import decode_item_error
from meshlib.ids import time_ordered_id
from openbank.account.v1 import account_pb2, ledger_pb2
from openbank.settlement.v1 import position_pb2
from services.payment.adapters.peers import GrpcLedger, GrpcSettlement


class BatchRpc:
    """A batch rpc fed by a Coalescer: callers send single requests, each gets its own answer.

    Every batch rpc of the mesh answers one result per item, in order, with the item's resource
    in ``result_field`` or its ``error_reason``; ``make_batch`` builds the batch request from the
    items. Items with the same ``key`` are one item (a batch may refuse duplicates as a whole,
    and they would get the same answer). A lone request goes as the ``single`` rpc, whose answer
    carries the same resource in the same field: an item of the batch is that rpc, and the
    single path is the cheaper one for one item.
    """

    def __init__(
        self,
        call: PeerCaller,
        *,
        single: Callable[..., Awaitable[Any]],
        batch: Callable[..., Awaitable[Any]],
        make_batch: Callable[[list[Any]], Any],
        result_field: str,
        what: str,
        key: Callable[[Any], str] = lambda request: request.request_id,
    ):
        self._call = call
        self._single = single
        self._batch = batch
        self._make_batch = make_batch
        self._result_field = result_field
        self._what = what
        self._key = key
        self._coalescer: Coalescer[Any, Any] = Coalescer(self._send, max_in_flight=1, name=what)

    async def __call__(self, request: Any) -> Any:
        """Send ``request`` with the others in flight; its resource, or its error raised."""
        return await self._coalescer.submit(request)

    async def _send(self, requests: list[Any]) -> list[Any]:
        unique = {self._key(request): request for request in requests}
        if len(unique) == 1:
            answer = await self._call(self._single, requests[0], self._what)
            return [getattr(answer, self._result_field)] * len(requests)
        answer = await self._call(self._batch, self._make_batch(list(unique.values())), f"{self._what} (batch)")
        outcomes = dict(zip(unique, _item_outcomes(answer.results, len(unique), self._result_field), strict=True))
        return [outcomes[self._key(request)] for request in requests]


def _idempotent_batch(request_type: Any) -> Callable[[list[Any]], Any]:
    """Builds a batch of items that are each idempotent by their own request_id; the batch's
    own request_id is new per batch (a retry on UNAVAILABLE resends the same one)."""
    return lambda items: request_type(request_id=time_ordered_id(), requests=items)


def _item_outcomes(results: Any, count: int, result_field: str) -> list[Any]:
    """Each item's resource (``result_field``) or its decoded error, by the results' ``index``."""
    by_index = {result.index: result for result in results}
    outcomes: list[Any] = []
    for index in range(count):
        result = by_index.get(index)
        if result is None:
            outcomes.append(MeshError("the batch answered no result for an item", reason="INTERNAL_ERROR"))
        elif result.error_reason:
            outcomes.append(decode_item_error(result.error_reason, result.error_message))
        else:
            outcomes.append(getattr(result, result_field))
    return outcomes


class BatchingLedger(GrpcLedger):
    """The ledger port with the debtor checks, holds and posts of the payments in flight as batch rpcs.

    A payment with a fee takes the linked rpcs of :class:`GrpcLedger` (its two legs are one
    chain, all or none), one call each; a fee-free payment's hold and post join the batches."""

    def __init__(self, channel: grpc.aio.Channel, call: PeerCaller, hold_timeout: int):
        super().__init__(channel, call, hold_timeout)
        self._accounts = BatchRpc(
            call,
            single=self._stub.GetLedgerAccount,
            batch=self._stub.BatchGetLedgerAccounts,
            make_batch=lambda items: ledger_pb2.BatchGetLedgerAccountsRequest(names=[item.name for item in items]),
            result_field="account",
            what="ledger.GetLedgerAccount",
            key=lambda request: request.name,
        )
        self._holds = BatchRpc(
            call,
            single=self._stub.CreateTransfer,
            batch=self._stub.BatchCreateTransfers,
            make_batch=_idempotent_batch(ledger_pb2.BatchCreateTransfersRequest),
            result_field="transfer",
            what="ledger.CreateTransfer",
        )
        self._posts = BatchRpc(
            call,
            single=self._stub.PostTransfer,
            batch=self._stub.BatchPostTransfers,
            make_batch=_idempotent_batch(ledger_pb2.BatchPostTransfersRequest),
            result_field="transfer",
            what="ledger.PostTransfer",
        )

    async def _send_account(self, request: ledger_pb2.GetLedgerAccountRequest) -> account_pb2.Account:
        return await self._accounts(request)

    async def _send_hold(self, request: ledger_pb2.CreateTransferRequest) -> ledger_pb2.Transfer:
        return await self._holds(request)

    async def _send_post(self, request: ledger_pb2.PostTransferRequest) -> ledger_pb2.Transfer:
        return await self._posts(request)


class BatchingSettlement(GrpcSettlement):
    """The positions port with the reservations and commits of the payments in flight as batch rpcs."""

    def __init__(self, channel: grpc.aio.Channel, call: PeerCaller, cache_seconds: float) -> None:
        super().__init__(channel, call, cache_seconds)
        self._reserves = BatchRpc(
            call,
            single=self._positions.ReserveObligation,
            batch=self._positions.BatchReserveObligations,
            make_batch=_idempotent_batch(position_pb2.BatchReserveObligationsRequest),
            result_field="obligation",
            what="settlement.ReserveObligation",
        )
        self._commits = BatchRpc(
            call,
            single=self._positions.CommitObligation,
            batch=self._positions.BatchCommitObligations,
            make_batch=_idempotent_batch(position_pb2.BatchCommitObligationsRequest),
            result_field="obligation",
            what="settlement.CommitObligation",
        )

    async def _send_reserve(self, request: position_pb2.ReserveObligationRequest) -> object:
        return await self._reserves(request)

    async def _send_commit(self, request: position_pb2.CommitObligationRequest) -> object:
        return await self._commits(request)
