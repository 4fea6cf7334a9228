"""gRPC adapters of payment's ports: the ledger (account), positions and participants
(settlement), partner limits (identity). One rpc per call; ``batching.py`` has the adapters
that send the calls of the payments in flight together.

Every call goes through :class:`meshlib.clients.PeerCaller` (service token, deadline,
retries on UNAVAILABLE only, the upstream's error reason) and carries an idempotency key
derived from the payment id, so any step can be sent again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
from google.protobuf import duration_pb2

from meshlib.cache import RefreshingCache
from meshlib.clients import PeerCaller
from meshlib.errors import FailedPrecondition, InvalidArgument, MeshError, NotFound
from openbank.account.v1 import account_pb2, ledger_pb2, ledger_pb2_grpc
from openbank.common.v1 import money_pb2
from openbank.settlement.v1 import position_pb2, position_pb2_grpc, settlement_admin_pb2, settlement_admin_pb2_grpc
from services.payment.domain.checks import LedgerAccountInfo, PartnerLimits
from services.payment.domain.payments import ParticipantInfo, Payment
from services.payment.domain.saga import TRANSIENT_REASONS

TRANSFER_STATES = {1: "PENDING", 2: "POSTED", 3: "VOIDED", 4: "EXPIRED"}


def _last(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _statement_text(payment: Payment) -> str:
    """What the customer's statement says of the transfer (a refund names what it refunds)."""
    if payment.is_refund:
        return f"refund {payment.payment_id} of payment {payment.original_payment_id} ({payment.return_reason})"
    if payment.external_creditor is not None:
        creditor = payment.external_creditor
        return f"payment {payment.payment_id} to {creditor.name[:40]} {creditor.account} ({creditor.agent_bic})"
    return f"payment {payment.payment_id}"


class GrpcLedger:
    """The debtor's account, and holds, posts and voids, on the account service's LedgerService."""

    def __init__(self, channel: grpc.aio.Channel, call: PeerCaller, hold_timeout: int):
        self._stub = ledger_pb2_grpc.LedgerServiceStub(channel)
        self._call = call
        self._hold_timeout = hold_timeout

    async def _send_account(self, request: ledger_pb2.GetLedgerAccountRequest) -> account_pb2.Account:
        return (await self._call(self._stub.GetLedgerAccount, request, "ledger.GetLedgerAccount")).account

    async def _send_hold(self, request: ledger_pb2.CreateTransferRequest) -> ledger_pb2.Transfer:
        return (await self._call(self._stub.CreateTransfer, request, "ledger.CreateTransfer")).transfer

    async def _send_post(self, request: ledger_pb2.PostTransferRequest) -> ledger_pb2.Transfer:
        return (await self._call(self._stub.PostTransfer, request, "ledger.PostTransfer")).transfer

    def _hold_request(self, payment: Payment) -> ledger_pb2.CreateTransferRequest:
        return ledger_pb2.CreateTransferRequest(
            request_id=f"{payment.payment_id}-hold",
            debit_account=f"accounts/{payment.debtor_account_id}",
            credit_account=f"accounts/{payment.creditor_ledger_account_id}",
            amount=money_pb2.Money(currency_code=payment.amount.currency, minor_units=payment.amount.minor_units),
            type=ledger_pb2.TRANSFER_TYPE_PENDING,
            timeout=duration_pb2.Duration(seconds=self._hold_timeout),
            reference=f"payments/{payment.payment_id}",
            description=_statement_text(payment),
        )

    def _fee_hold_request(self, payment: Payment) -> ledger_pb2.CreateTransferRequest:
        return ledger_pb2.CreateTransferRequest(
            request_id=f"{payment.payment_id}-fee",
            debit_account=f"accounts/{payment.fee_debit_account_id}",
            credit_account=f"accounts/{payment.fee_credit_account_id}",
            amount=money_pb2.Money(currency_code=payment.amount.currency, minor_units=payment.fee_minor),
            type=ledger_pb2.TRANSFER_TYPE_PENDING,
            timeout=duration_pb2.Duration(seconds=self._hold_timeout),
            reference=f"payments/{payment.payment_id}-fee",
            description=f"fee of payment {payment.payment_id}",
        )

    async def hold(self, payment: Payment) -> None:
        """Create the pending transfer ``transfers/{payment}-hold``; with a fee, and
        ``transfers/{payment}-fee`` linked to it (both created or neither)."""
        if not payment.has_fee:
            await self._send_hold(self._hold_request(payment))
            return
        request = ledger_pb2.CreateLinkedTransfersRequest(
            request_id=f"{payment.payment_id}-holds",
            requests=[self._hold_request(payment), self._fee_hold_request(payment)],
        )
        await self._call(self._stub.CreateLinkedTransfers, request, "ledger.CreateLinkedTransfers")

    async def post(self, payment: Payment) -> None:
        """Post the hold (idempotent by request id); with a fee, both holds linked."""
        request = ledger_pb2.PostTransferRequest(
            request_id=f"{payment.payment_id}-post", name=f"transfers/{payment.payment_id}-hold"
        )
        if not payment.has_fee:
            await self._send_post(request)
            return
        fee = ledger_pb2.PostTransferRequest(
            request_id=f"{payment.payment_id}-fee-post", name=f"transfers/{payment.payment_id}-fee"
        )
        linked = ledger_pb2.PostLinkedTransfersRequest(
            request_id=f"{payment.payment_id}-posts", requests=[request, fee]
        )
        await self._call(self._stub.PostLinkedTransfers, linked, "ledger.PostLinkedTransfers")

    async def void(self, payment: Payment) -> None:
        """Void the hold (with a fee, both holds linked); a hold that never existed, or already
        voided or expired, counts as done (the holds were created together, so they expire
        together and neither exists without the other)."""
        request = ledger_pb2.VoidTransferRequest(
            request_id=f"{payment.payment_id}-void", name=f"transfers/{payment.payment_id}-hold"
        )
        try:
            if not payment.has_fee:
                await self._call(self._stub.VoidTransfer, request, "ledger.VoidTransfer")
                return
            fee = ledger_pb2.VoidTransferRequest(
                request_id=f"{payment.payment_id}-fee-void", name=f"transfers/{payment.payment_id}-fee"
            )
            linked = ledger_pb2.VoidLinkedTransfersRequest(
                request_id=f"{payment.payment_id}-voids", requests=[request, fee]
            )
            await self._call(self._stub.VoidLinkedTransfers, linked, "ledger.VoidLinkedTransfers")
        except NotFound:
            return
        except FailedPrecondition as error:
            if error.reason in ("TRANSFER_ALREADY_VOIDED", "TRANSFER_EXPIRED"):
                return
            raise

    async def describe_account(self, account_id: str) -> LedgerAccountInfo:
        """Owner, currency and status of an account (checked before any money moves)."""
        account = await self._send_account(ledger_pb2.GetLedgerAccountRequest(name=f"accounts/{account_id}"))
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

    def __init__(self, channel: grpc.aio.Channel, call: PeerCaller, cache_seconds: float) -> None:
        self._positions = position_pb2_grpc.PositionServiceStub(channel)
        self._admin = settlement_admin_pb2_grpc.SettlementAdminServiceStub(channel)
        self._call = call
        # The whole participant list under one key: one ListParticipants however many calls miss.
        self._participants: RefreshingCache[str, list[ParticipantInfo]] = RefreshingCache(
            cache_seconds, name="participants"
        )

    async def _send_reserve(self, request: position_pb2.ReserveObligationRequest) -> object:
        return await self._call(self._positions.ReserveObligation, request, "settlement.ReserveObligation")

    async def _send_commit(self, request: position_pb2.CommitObligationRequest) -> object:
        return await self._call(self._positions.CommitObligation, request, "settlement.CommitObligation")

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
                        is_scheme=p.type == settlement_admin_pb2.PARTICIPANT_TYPE_SCHEME,
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
        found = await self._find(lambda p: not p.is_bank and not p.is_scheme and p.partner_id == partner_id)
        if found is None:
            raise InvalidArgument.field(
                "creditor_wallet", "the partner has no settlement wallet", reason="BENEFICIARY_INVALID"
            )
        return found

    async def scheme(self) -> ParticipantInfo:
        """The clearing scheme's participant (the payee of every payment to another bank)."""
        found = await self._find(lambda p: p.is_scheme)
        if found is None:
            raise FailedPrecondition(
                "the clearing scheme is not a settlement participant", reason="PARTICIPANT_NOT_ACTIVE"
            )
        return found

    async def _each(self, payment: Payment, send: Callable[[str], Awaitable[object]]) -> None:
        """``send`` for the payment's obligation and its fee's (``{payment}-fee``), as it has them;
        the fee's goes together with the payment's, and a refusal wins over an unanswered call."""
        names = ([payment.payment_id] if payment.needs_settlement else []) + (
            [f"{payment.payment_id}-fee"] if payment.has_fee else []
        )
        if len(names) == 1:
            await send(names[0])
            return
        outcomes = await asyncio.gather(*(send(name) for name in names), return_exceptions=True)
        errors = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if errors:
            refused = [e for e in errors if isinstance(e, MeshError) and e.reason not in TRANSIENT_REASONS]
            raise (refused or errors)[0]

    def _reserve_request(self, payment: Payment, name: str) -> position_pb2.ReserveObligationRequest:
        fee = name != payment.payment_id
        payer = payment.fee_payer_participant_id if fee else payment.payer_participant_id
        payee = payment.fee_payee_participant_id if fee else payment.payee_participant_id
        return position_pb2.ReserveObligationRequest(
            request_id=f"{name}-reserve",
            payment=f"payments/{name}",
            payer=f"participants/{payer}",
            payee=f"participants/{payee}",
            amount=money_pb2.Money(
                currency_code=payment.amount.currency,
                minor_units=payment.fee_minor if fee else payment.amount.minor_units,
            ),
            kind=position_pb2.OBLIGATION_KIND_PAYMENT
            if fee
            else position_pb2.ObligationKind.Value(f"OBLIGATION_KIND_{payment.obligation_kind}"),
        )

    async def reserve(self, payment: Payment) -> None:
        """Reserve the obligation ``obligations/{payment}`` (idempotent by payment); with a fee,
        and ``obligations/{payment}-fee`` (the wallet owes the bank the fee). All or none: when
        one is refused the others are released before the refusal is answered (the saga undoes
        nothing after a refusal); if that release fails, its error is answered instead, so the
        step counts as unanswered and the saga's compensation releases them all."""

        async def send(name: str) -> None:
            await self._send_reserve(self._reserve_request(payment, name))

        try:
            await self._each(payment, send)
        except MeshError as error:
            if error.reason in TRANSIENT_REASONS or not (payment.needs_settlement and payment.has_fee):
                raise
            await self.release(payment)
            raise

    async def commit(self, payment: Payment) -> None:
        """Commit the obligation(s) (idempotent)."""

        async def send(name: str) -> None:
            request = position_pb2.CommitObligationRequest(request_id=f"{name}-commit", name=f"obligations/{name}")
            await self._send_commit(request)

        await self._each(payment, send)

    async def release(self, payment: Payment) -> None:
        """Release the obligation(s); one that was never reserved counts as released."""

        async def send(name: str) -> None:
            request = position_pb2.ReleaseObligationRequest(request_id=f"{name}-release", name=f"obligations/{name}")
            try:
                await self._call(self._positions.ReleaseObligation, request, "settlement.ReleaseObligation")
            except NotFound:
                return

        await self._each(payment, send)


def _risk_tier_name(value: int) -> str:
    """PARTNER_RISK_TIER_HIGH -> "HIGH"; unset or unknown -> "" (not known)."""
    from openbank.identity.v1 import partner_pb2

    if value == partner_pb2.PARTNER_RISK_TIER_UNSPECIFIED:
        return ""
    names = {v.number: v.name for v in partner_pb2.PartnerRiskTier.DESCRIPTOR.values}
    return names.get(value, "").removeprefix("PARTNER_RISK_TIER_")


class GrpcPartnerDirectory:
    """Partner payment limits and risk tier from identity's PartnerService (service token, cached)."""

    def __init__(self, channel: grpc.aio.Channel, call: PeerCaller, cache_seconds: float) -> None:
        from openbank.identity.v1 import partner_pb2_grpc

        self._stub = partner_pb2_grpc.PartnerServiceStub(channel)
        self._call = call
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
            risk_tier=_risk_tier_name(partner.risk_tier),
        )
        return limits
