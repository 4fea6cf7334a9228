"""Refunds against in-memory fakes: which payments can be refunded, how much, the refund
payment itself (the money going back the way it came), and the rule that refunds never add
up to more than the payment, under any sequence of partial refunds, refusals and retries."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshlib.errors import AlreadyExists, FailedPrecondition, InvalidArgument, MeshError, NotFound
from meshlib.money import Amount
from meshlib.storage import IdempotencyKey
from services.payment.domain.payments import Payment, PaymentState
from services.payment.domain.refunds import RefundRequest, check_refundable, refund_of, refundable_minor
from services.payment.ports import OPERATOR_REFUND_METHOD, REFUND_METHOD
from services.payment.refund_payment import RefundPayment
from tests.unit.payment.fakes import NOW
from tests.unit.payment.test_saga import World


def _request(original: Payment, amount: int | None, *, partner: str | None = "w1", reason: str = "CUST"):  # type: ignore[no-untyped-def]
    return RefundRequest(
        original.payment_id, Amount("EUR", amount) if amount is not None else None, reason, partner_id=partner
    )


def _key(request_id: str, fingerprint: str = "", *, operator: bool = False) -> IdempotencyKey:
    if operator:
        return IdempotencyKey("operator:ops", OPERATOR_REFUND_METHOD, request_id, fingerprint or request_id)
    return IdempotencyKey("w1", REFUND_METHOD, request_id, fingerprint or request_id)


class RefundWorld(World):
    def __init__(self, **kwargs: int) -> None:
        super().__init__(**kwargs)
        self.refund = RefundPayment(register=self.store, saga=self.saga, clock=lambda: NOW)


# -- the rules -------------------------------------------------------------------------------


async def test_a_settled_top_up_refunds_back_the_way_it_came() -> None:
    world = RefundWorld()
    original = await world.pay(500, "p1")
    refund = await world.refund(_request(original, 200), _key("r1"))
    assert (refund.state, refund.payment_type, refund.original_payment_id) == (
        PaymentState.SETTLED,
        "REFUND",
        original.payment_id,
    )
    # Out of the wallet's settlement account, back into the customer's account ...
    assert (refund.debtor_account_id, refund.creditor_ledger_account_id) == (
        original.creditor_ledger_account_id,
        original.debtor_account_id,
    )
    # ... and the wallet now owes the bank: payer and payee swapped.
    assert (refund.payer_participant_id, refund.payee_participant_id) == (
        original.payee_participant_id,
        original.payer_participant_id,
    )
    assert world.ledger.holds[refund.payment_id] == "POSTED"
    assert world.positions.obligations[refund.payment_id] == "COMMITTED"
    facts = await world.store.refund_facts(original.payment_id)
    assert facts is not None and facts[1] == 300


def test_only_a_settled_payment_that_is_no_refund_can_be_refunded() -> None:
    original = _settled_top_up(1000)
    for state in (PaymentState.ACCEPTED, PaymentState.SETTLEMENT_IN_PROCESS, PaymentState.REJECTED):
        with pytest.raises(FailedPrecondition) as refused:
            check_refundable(dataclasses.replace(original, state=state), _request(original, 10), 1000)
        assert refused.value.reason == "PAYMENT_NOT_REFUNDABLE"
    refund = refund_of(original, _request(original, 10), Amount("EUR", 10), "rf1", NOW)
    with pytest.raises(FailedPrecondition) as refused:
        check_refundable(dataclasses.replace(refund, state=PaymentState.SETTLED), _request(refund, 5), 10)
    assert refused.value.reason == "PAYMENT_NOT_REFUNDABLE"


def test_a_partner_refunds_only_payments_to_its_wallet_the_bank_any() -> None:
    transfer = dataclasses.replace(_settled_top_up(1000), payment_type="TRANSFER", payer_participant_id="")
    with pytest.raises(FailedPrecondition) as refused:
        check_refundable(transfer, _request(transfer, 10), 1000)
    assert refused.value.reason == "PAYMENT_NOT_REFUNDABLE"
    assert check_refundable(transfer, _request(transfer, 10, partner=None), 1000) == Amount("EUR", 10)


def test_the_amount_is_at_most_what_is_left_and_defaults_to_all_of_it() -> None:
    original = _settled_top_up(1000)
    assert check_refundable(original, _request(original, None), 400) == Amount("EUR", 400)
    assert check_refundable(original, _request(original, 400), 400) == Amount("EUR", 400)
    with pytest.raises(FailedPrecondition) as refused:
        check_refundable(original, _request(original, 401), 400)
    assert (refused.value.reason, refused.value.metadata["refundable_minor"]) == ("REFUND_AMOUNT_EXCEEDED", "400")
    with pytest.raises(FailedPrecondition):
        check_refundable(original, _request(original, None), 0)  # nothing left: not a zero refund
    with pytest.raises(InvalidArgument) as mismatch:
        check_refundable(original, RefundRequest(original.payment_id, Amount("GBP", 5), "CUST", partner_id="w1"), 400)
    assert mismatch.value.reason == "CURRENCY_MISMATCH"


def test_rejected_and_cancelled_refunds_leave_their_amount_refundable() -> None:
    original = _settled_top_up(1000)
    refunds = [
        (PaymentState.SETTLED, 100),
        (PaymentState.SETTLEMENT_IN_PROCESS, 200),
        (PaymentState.ACCEPTED, 50),
        (PaymentState.REJECTED, 300),
        (PaymentState.CANCELLED, 25),
    ]
    assert refundable_minor(original, refunds) == 1000 - 350


# -- the use case ----------------------------------------------------------------------------


async def test_an_unknown_return_reason_is_refused_naming_the_field() -> None:
    world = RefundWorld()
    original = await world.pay(500, "p1")
    with pytest.raises(InvalidArgument) as refused:
        await world.refund(_request(original, 10, reason="WHIM"), _key("r1"))
    assert refused.value.violations[0].field == "reason"


async def test_another_partners_payment_is_not_found_the_operator_refunds_it() -> None:
    world = RefundWorld()
    original = await world.pay(500, "p1")
    with pytest.raises(NotFound):
        await world.refund(_request(original, 10, partner="w2"), _key("r1"))
    refund = await world.refund(_request(original, 10, partner=None), _key("r1", operator=True))
    assert refund.state is PaymentState.SETTLED


async def test_a_retry_of_a_refund_that_used_up_the_payment_answers_the_same_refund() -> None:
    world = RefundWorld()
    original = await world.pay(500, "p1")
    first = await world.refund(_request(original, None), _key("r1"))
    again = await world.refund(_request(original, None), _key("r1"))
    assert again.payment_id == first.payment_id and again.amount == Amount("EUR", 500)
    with pytest.raises(FailedPrecondition) as refused:
        await world.refund(_request(original, None), _key("r2"))
    assert refused.value.reason == "REFUND_AMOUNT_EXCEEDED"
    assert world.ledger.holds[first.payment_id] == "POSTED" and len(world.ledger.holds) == 2


async def test_a_refund_the_wallet_cannot_pay_is_rejected_and_frees_its_amount() -> None:
    world = RefundWorld()
    original = await world.pay(500, "p1")
    world.faults.refuse["hold"] = FailedPrecondition("not enough money", reason="INSUFFICIENT_FUNDS")
    rejected = await world.refund(_request(original, 500), _key("r1"))
    assert (rejected.state, rejected.status_reason) == (PaymentState.REJECTED, "INSUFFICIENT_FUNDS")
    assert world.positions.obligations[rejected.payment_id] == "RELEASED"
    del world.faults.refuse["hold"]
    settled = await world.refund(_request(original, 500), _key("r2"))
    assert settled.state is PaymentState.SETTLED


async def test_two_refunds_at_once_never_exceed_the_payment() -> None:
    world = RefundWorld()
    original = await world.pay(500, "p1")
    outcomes = await asyncio.gather(
        world.refund(_request(original, 300), _key("r1")),
        world.refund(_request(original, 300), _key("r2")),
        return_exceptions=True,
    )
    settled = [o for o in outcomes if isinstance(o, Payment)]
    refused = [o for o in outcomes if isinstance(o, MeshError)]
    assert len(settled) == 1 and len(refused) == 1 and refused[0].reason == "REFUND_AMOUNT_EXCEEDED"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    attempts=st.lists(
        st.tuples(st.one_of(st.none(), st.integers(1, 700)), st.booleans(), st.booleans()), min_size=1, max_size=8
    ),
    original_amount=st.integers(1, 600),
)
def test_refunds_never_add_up_to_more_than_the_payment(
    attempts: list[tuple[int | None, bool, bool]], original_amount: int
) -> None:
    """Any sequence of refund requests (some for all that is left, some retried with the same
    request id, some refused by the ledger): the settled refunds never exceed the payment,
    and a request is refused for its amount exactly when it asked for more than was left."""

    async def scenario() -> None:
        world = RefundWorld()
        original = await world.pay(original_amount, "p1")
        left = original_amount
        seen: set[str] = set()
        for index, (amount, ledger_refuses, retry) in enumerate(attempts):
            if ledger_refuses:
                world.faults.refuse["hold"] = FailedPrecondition("not enough money", reason="INSUFFICIENT_FUNDS")
            request_id = f"r{index - 1 if retry and index else index}"
            fingerprint = f"{request_id}:{amount}"
            try:
                refund = await world.refund(_request(original, amount), _key(request_id, fingerprint))
            except FailedPrecondition as refused:
                assert refused.reason == "REFUND_AMOUNT_EXCEEDED"
                assert (amount or left) > left or left == 0
            except AlreadyExists as reused:  # a retry with another amount
                assert reused.reason == "REQUEST_ID_REUSED"
            else:
                if refund.payment_id not in seen and refund.state is PaymentState.SETTLED:
                    left -= refund.amount.minor_units
                seen.add(refund.payment_id)
            world.faults.refuse.pop("hold", None)
            settled = sum(r.amount.minor_units for r in _refunds(world, original) if r.state is PaymentState.SETTLED)
            assert settled <= original_amount
            assert settled == original_amount - left

    asyncio.run(scenario())


def _refunds(world: RefundWorld, original: Payment) -> list[Payment]:
    return [row.payment for row in world.store.rows.values() if row.payment.original_payment_id == original.payment_id]


def _settled_top_up(amount: int) -> Payment:
    return Payment(
        payment_id="p1",
        partner_id="w1",
        consent_id="c1",
        debtor_account_id="a1",
        creditor_account_id=None,
        creditor_wallet_partner_id="w1",
        amount=Amount("EUR", amount),
        payment_type="WALLET_TOP_UP",
        state=PaymentState.SETTLED,
        created_at=NOW,
        updated_at=NOW,
        customer_id="cust1",
        creditor_ledger_account_id="wallet-account-w1",
        payer_participant_id="bank",
        payee_participant_id="wallet-w1",
    )
