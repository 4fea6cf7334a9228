"""gRPC adapters of the saga's ports: the ledger (account), positions (settlement), partners (identity).

Every call has a deadline, is retried with backoff on UNAVAILABLE only, carries a service
token and an idempotency key derived from the payment id. Failures come back as
meshlib errors with the upstream's reason (``decode_rpc_error``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import duration_pb2

from meshlib.cache import RefreshingCache
from meshlib.clients import call_with_retry
from meshlib.coalesce import Coalescer
from meshlib.errors import FailedPrecondition, InvalidArgument, MeshError, NotFound
from meshlib.grpc_errors import decode_item_error, decode_rpc_error
from meshlib.ids import time_ordered_id
from openbank.account.v1 import account_pb2, ledger_pb2, ledger_pb2_grpc
from openbank.common.v1 import money_pb2
from openbank.settlement.v1 import position_pb2, position_pb2_grpc, settlement_admin_pb2, settlement_admin_pb2_grpc
from services.payment.domain.checks import LedgerAccountInfo, PartnerLimits
from services.payment.domain.payments import ParticipantInfo, Payment

T = TypeVar("T")
Bearer = Callable[[], Awaitable[str]]

TRANSFER_STATES = {1: "PENDING", 2: "POSTED", 3: "VOIDED", 4: "EXPIRED"}


def _last(name: str) -> str:
    return name.rsplit("/", 1)[-1]


class _Caller:
    """Deadline + token + retry on UNAVAILABLE + error decoding, shared by the adapters."""

    def __init__(self, bearer: Bearer, deadline_seconds: float, attempts: int) -> None:
        self._bearer = bearer
        self._deadline = deadline_seconds
        self._attempts = attempts

    async def __call__(self, method: Callable[..., Awaitable[T]], request: Any, what: str) -> T:
        metadata = (("authorization", f"Bearer {await self._bearer()}"),)
        try:
            return await call_with_retry(
                lambda **options: method(request, timeout=self._deadline, metadata=metadata, **options),
                attempts=self._attempts,
                what=what,
            )
        except grpc.aio.AioRpcError as error:
            raise decode_rpc_error(error) from None


class _BatchRpc:
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
        call: _Caller,
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


class GrpcLedger:
    """Holds, posts and voids on the account service's LedgerService."""

    def __init__(self, channel: grpc.aio.Channel, bearer: Bearer, deadline: float, attempts: int, hold_timeout: int):
        self._stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        self._call = _Caller(bearer, deadline, attempts)
        self._hold_timeout = hold_timeout
        # The debtor checks, holds and posts of the payments in flight leave together, as batch rpcs.
        self._accounts = _BatchRpc(
            self._call,
            single=self._stub.GetLedgerAccount,
            batch=self._stub.BatchGetLedgerAccounts,
            make_batch=lambda items: ledger_pb2.BatchGetLedgerAccountsRequest(names=[item.name for item in items]),
            result_field="account",
            what="ledger.GetLedgerAccount",
            key=lambda request: request.name,
        )
        self._holds = _BatchRpc(
            self._call,
            single=self._stub.CreateTransfer,
            batch=self._stub.BatchCreateTransfers,
            make_batch=_idempotent_batch(ledger_pb2.BatchCreateTransfersRequest),
            result_field="transfer",
            what="ledger.CreateTransfer",
        )
        self._posts = _BatchRpc(
            self._call,
            single=self._stub.PostTransfer,
            batch=self._stub.BatchPostTransfers,
            make_batch=_idempotent_batch(ledger_pb2.BatchPostTransfersRequest),
            result_field="transfer",
            what="ledger.PostTransfer",
        )

    async def hold(self, payment: Payment) -> str:
        """Create the pending transfer ``transfers/{payment}-hold``; returns its name."""
        request = ledger_pb2.CreateTransferRequest(
            request_id=f"{payment.payment_id}-hold",
            debit_account=f"accounts/{payment.debtor_account_id}",
            credit_account=f"accounts/{payment.creditor_ledger_account_id}",
            amount=money_pb2.Money(currency_code=payment.amount.currency, minor_units=payment.amount.minor_units),
            type=ledger_pb2.TRANSFER_TYPE_PENDING,
            timeout=duration_pb2.Duration(seconds=self._hold_timeout),
            reference=f"payments/{payment.payment_id}",
            description=f"payment {payment.payment_id}",
        )
        transfer: ledger_pb2.Transfer = await self._holds(request)
        return transfer.name

    async def post(self, payment: Payment) -> None:
        """Post the hold (idempotent by request id)."""
        request = ledger_pb2.PostTransferRequest(
            request_id=f"{payment.payment_id}-post", name=f"transfers/{payment.payment_id}-hold"
        )
        await self._posts(request)

    async def void(self, payment: Payment) -> None:
        """Void the hold; a hold that never existed, or already voided or expired, counts as done."""
        request = ledger_pb2.VoidTransferRequest(
            request_id=f"{payment.payment_id}-void", name=f"transfers/{payment.payment_id}-hold"
        )
        try:
            await self._call(self._stub.VoidTransfer, request, "ledger.VoidTransfer")
        except NotFound:
            return
        except FailedPrecondition as error:
            if error.reason in ("TRANSFER_ALREADY_VOIDED", "TRANSFER_EXPIRED"):
                return
            raise

    async def describe_account(self, account_id: str) -> LedgerAccountInfo:
        """Owner, currency and status of an account (checked before any money moves)."""
        account = await self._accounts(ledger_pb2.GetLedgerAccountRequest(name=f"accounts/{account_id}"))
        return LedgerAccountInfo(
            account_id=account_id,
            customer_id=account.customer.removeprefix("customers/") or None,
            currency=account.currency_code,
            active=account.status == account_pb2.ACCOUNT_STATUS_ACTIVE,
        )

    async def hold_state(self, payment: Payment) -> str | None:
        """PENDING, POSTED, VOIDED or EXPIRED; None when the hold does not exist."""
        request = ledger_pb2.GetTransferRequest(name=f"transfers/{payment.payment_id}-hold")
        try:
            answer = await self._call(self._stub.GetTransfer, request, "ledger.GetTransfer")
        except NotFound:
            return None
        return TRANSFER_STATES.get(answer.transfer.state)


class GrpcSettlement:
    """Obligations on settlement's PositionService; participants from its admin service (cached)."""

    def __init__(
        self, channel: grpc.aio.Channel, bearer: Bearer, deadline: float, attempts: int, cache_seconds: float
    ) -> None:
        self._positions = position_pb2_grpc.PositionServiceStub(channel)
        self._admin = settlement_admin_pb2_grpc.SettlementAdminServiceStub(channel)
        self._call = _Caller(bearer, deadline, attempts)
        # The reservations and commits of the payments in flight leave together, as batch rpcs.
        self._reserves = _BatchRpc(
            self._call,
            single=self._positions.ReserveObligation,
            batch=self._positions.BatchReserveObligations,
            make_batch=_idempotent_batch(position_pb2.BatchReserveObligationsRequest),
            result_field="obligation",
            what="settlement.ReserveObligation",
        )
        self._commits = _BatchRpc(
            self._call,
            single=self._positions.CommitObligation,
            batch=self._positions.BatchCommitObligations,
            make_batch=_idempotent_batch(position_pb2.BatchCommitObligationsRequest),
            result_field="obligation",
            what="settlement.CommitObligation",
        )
        # The whole participant list under one key: one ListParticipants however many calls miss.
        self._participants: RefreshingCache[str, list[ParticipantInfo]] = RefreshingCache(
            cache_seconds, name="participants"
        )

    async def _load(self) -> list[ParticipantInfo]:
        found: list[ParticipantInfo] = []
        token = ""
        while True:
            answer = await self._call(
                self._admin.ListParticipants,
                settlement_admin_pb2.ListParticipantsRequest(page_size=500, page_token=token),
                "settlement.ListParticipants",
            )
            for p in answer.participants:
                found.append(
                    ParticipantInfo(
                        _last(p.name),
                        _last(p.partner) if p.partner else "",
                        p.type == settlement_admin_pb2.PARTICIPANT_TYPE_BANK,
                        _last(p.settlement_account),
                    )
                )
            token = answer.next_page_token
            if not token:
                return found

    async def _find(self, match: Callable[[ParticipantInfo], bool]) -> ParticipantInfo | None:
        found = next((p for p in await self._participants.get("", self._load) if match(p)), None)
        if found is None:  # maybe registered since the list was loaded: look once more
            self._participants.invalidate("")
            found = next((p for p in await self._participants.get("", self._load) if match(p)), None)
        return found

    async def bank(self) -> ParticipantInfo:
        """The bank's participant (the payer of every top-up)."""
        found = await self._find(lambda p: p.is_bank)
        if found is None:
            raise FailedPrecondition("the bank is not a settlement participant", reason="PARTICIPANT_NOT_ACTIVE")
        return found

    async def wallet(self, partner_id: str) -> ParticipantInfo:
        """The partner's wallet participant; BENEFICIARY_INVALID when it has none."""
        found = await self._find(lambda p: not p.is_bank and p.partner_id == partner_id)
        if found is None:
            raise InvalidArgument.field(
                "creditor_wallet", "the partner has no settlement wallet", reason="BENEFICIARY_INVALID"
            )
        return found

    async def reserve(self, payment: Payment) -> None:
        """Reserve the obligation ``obligations/{payment}`` (idempotent by payment)."""
        request = position_pb2.ReserveObligationRequest(
            request_id=f"{payment.payment_id}-reserve",
            payment=f"payments/{payment.payment_id}",
            payer=f"participants/{payment.payer_participant_id}",
            payee=f"participants/{payment.payee_participant_id}",
            amount=money_pb2.Money(currency_code=payment.amount.currency, minor_units=payment.amount.minor_units),
        )
        await self._reserves(request)

    async def commit(self, payment: Payment) -> None:
        """Commit the obligation (idempotent)."""
        request = position_pb2.CommitObligationRequest(
            request_id=f"{payment.payment_id}-commit", name=f"obligations/{payment.payment_id}"
        )
        await self._commits(request)

    async def release(self, payment: Payment) -> None:
        """Release the obligation; one that was never reserved counts as released."""
        request = position_pb2.ReleaseObligationRequest(
            request_id=f"{payment.payment_id}-release", name=f"obligations/{payment.payment_id}"
        )
        try:
            await self._call(self._positions.ReleaseObligation, request, "settlement.ReleaseObligation")
        except NotFound:
            return


class GrpcPartnerDirectory:
    """Partner payment limits from identity's PartnerService (service token, cached)."""

    def __init__(
        self, channel: grpc.aio.Channel, bearer: Bearer, deadline: float, attempts: int, cache_seconds: float
    ) -> None:
        from openbank.identity.v1 import partner_pb2_grpc

        self._stub = partner_pb2_grpc.PartnerServiceStub(channel)
        self._call = _Caller(bearer, deadline, attempts)
        self._cache: RefreshingCache[str, PartnerLimits] = RefreshingCache(cache_seconds, name="partner-limits")

    async def limits(self, partner_id: str) -> PartnerLimits:
        """The partner's per-payment and daily limits."""
        return await self._cache.get(partner_id, lambda: self._fetch(partner_id))

    async def _fetch(self, partner_id: str) -> PartnerLimits:
        from openbank.identity.v1 import partner_pb2

        answer = await self._call(
            self._stub.GetPartner, partner_pb2.GetPartnerRequest(name=f"partners/{partner_id}"), "identity.GetPartner"
        )
        partner = answer.partner
        per_payment = partner.per_payment_limit if partner.HasField("per_payment_limit") else None
        daily = partner.daily_limit if partner.HasField("daily_limit") else None
        limits = PartnerLimits(
            partner_id=partner_id,
            per_payment_minor=per_payment.minor_units if per_payment and per_payment.minor_units else None,
            daily_minor=daily.minor_units if daily and daily.minor_units else None,
            currency=(per_payment.currency_code if per_payment else "")
            or (daily.currency_code if daily else "")
            or None,
        )
        return limits
