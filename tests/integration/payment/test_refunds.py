"""Refunds over real gRPC (account + settlement + payment in-process), SQLite and PostgreSQL,
with the speed-up adapters and without: the money and positions go back, both payments show
the link, the customer's statement shows both, and every refusal has its reason."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from meshlib.grpc_errors import decode_rpc_error
from openbank.account.v1 import account_pb2, account_pb2_grpc, ledger_pb2
from openbank.common.v1 import audit_pb2, audit_pb2_grpc
from openbank.payment.v1 import payment_admin_pb2, payment_pb2
from tests.integration.payment.mesh import Mesh, money, running_mesh, standard_mesh
from tests.support.servers import create_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def urls(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    names = ("account", "settlement", "payment")
    if request.param == "sqlite":
        yield {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in names}
        return
    server = request.getfixturevalue("postgres_srv")
    yield {n: await create_database(server, f"t_{n}_{uuid.uuid4().hex[:12]}") for n in names}


@pytest.fixture(params=["batched", "plain"])
async def mesh(request: pytest.FixtureRequest, urls: dict[str, str]) -> AsyncIterator[Mesh]:
    async with running_mesh(urls, payment_batching=request.param == "batched") as running:
        yield await standard_mesh(running)


@pytest.fixture
async def sqlite_mesh(tmp_path) -> AsyncIterator[Mesh]:  # type: ignore[no-untyped-def]
    urls = {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in ("account", "settlement", "payment")}
    async with running_mesh(urls) as running:
        yield await standard_mesh(running)


def _wallet_token(mesh: Mesh, partner: str = "partner-1") -> tuple[tuple[str, str], ...]:
    """A client-credentials token: no consent (a refund needs none)."""
    token = mesh.issuer.token(partner, scopes=["payments:write", "payments:read"], partner_id=partner)
    return (("authorization", f"Bearer {token}"),)


async def _refund(
    mesh: Mesh,
    original: str,
    amount: int | None = None,
    *,
    reason: str = "CUST",
    request_id: str | None = None,
    partner: str = "partner-1",
) -> payment_pb2.Payment:
    request = payment_pb2.RefundPaymentRequest(request_id=request_id or uuid.uuid4().hex, name=original, reason=reason)
    if amount is not None:
        request.amount.CopyFrom(money(amount))
    answer = await mesh.payments.RefundPayment(request, metadata=_wallet_token(mesh, partner))
    return answer.refund


async def _refused(call) -> tuple[grpc.StatusCode, str, dict[str, str], list[str]]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    status = decode_rpc_error(refused.value)
    return (
        refused.value.code(),
        status.reason,
        dict(status.metadata),
        [v.field for v in getattr(status, "violations", ())],
    )


async def _get(mesh: Mesh, name: str) -> payment_pb2.Payment:
    answer = await mesh.payments.GetPayment(payment_pb2.GetPaymentRequest(name=name), metadata=mesh.partner())
    return answer.payment


async def test_a_top_up_refunded_in_two_parts_moves_money_and_positions_back(mesh: Mesh) -> None:
    original = await mesh.top_up(2_500)
    assert original.state == payment_pb2.PAYMENT_STATE_SETTLED
    first = await _refund(mesh, original.name, 1_000, reason="CUST")
    second = await _refund(mesh, original.name, reason="DUPL")  # all that is left
    for refund, amount, reason in ((first, 1_000, "CUST"), (second, 1_500, "DUPL")):
        assert refund.state == payment_pb2.PAYMENT_STATE_SETTLED, refund
        assert (refund.type, refund.refund_of, refund.return_reason) == (
            payment_pb2.PAYMENT_TYPE_REFUND,
            original.name,
            reason,
        )
        assert refund.amount.minor_units == amount
        assert refund.debtor_account == f"accounts/{mesh.accounts['wallet-1']}"
        assert refund.creditor_account == original.debtor_account
        assert await mesh.hold_state(refund.name) == "POSTED"
        assert await mesh.obligation_state(refund.name) == "COMMITTED"
    # Everything back where it was: alice's money, both positions, a balanced ledger.
    assert await mesh.balance("alice") == (100_000, 100_000)
    assert await mesh.position("bank") == (0, 0)
    assert await mesh.position("wallet-1") == (0, 0)
    assert await mesh.ledger_balanced()
    # The original shows its refunds and how much was refunded.
    shown = await _get(mesh, original.name)
    assert list(shown.refunds) == [first.name, second.name]
    assert shown.refunded_amount.minor_units == 2_500
    listed = await mesh.payments.ListPayments(payment_pb2.ListPaymentsRequest(), metadata=mesh.partner())
    by_name = {p.name: p for p in listed.payments}
    assert list(by_name[original.name].refunds) == [first.name, second.name]
    assert by_name[first.name].refund_of == original.name  # refunds are listed under the consent too
    # Nothing more to refund.
    code, reason, metadata, _ = await _refused(_refund(mesh, original.name, 1))
    assert (code, reason, metadata["refundable_minor"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "REFUND_AMOUNT_EXCEEDED",
        "0",
    )


async def test_the_customers_statement_shows_the_payment_and_its_refund(sqlite_mesh: Mesh) -> None:
    mesh = sqlite_mesh
    mesh.grant("c1", "partner-1", ["alice", "bob"], permissions=frozenset({"INITIATE_PAYMENTS", "READ_TRANSACTIONS"}))
    original = await mesh.top_up(700)
    refund = await _refund(mesh, original.name, 300, reason="MD06")
    stub = account_pb2_grpc.AccountServiceStub(mesh.channels["account"])
    answer = await stub.ListTransactions(
        account_pb2.ListTransactionsRequest(parent=f"accounts/{mesh.accounts['alice']}"), metadata=mesh.partner()
    )
    rows = {t.reference: t for t in answer.transactions}
    paid, refunded = rows[original.name], rows[refund.name]
    assert (paid.credit_debit_indicator, paid.amount.minor_units) == (account_pb2.CREDIT_DEBIT_INDICATOR_DEBIT, 700)
    assert (refunded.credit_debit_indicator, refunded.amount.minor_units) == (
        account_pb2.CREDIT_DEBIT_INDICATOR_CREDIT,
        300,
    )
    original_id = original.name.removeprefix("payments/")
    assert original_id in refunded.description and "MD06" in refunded.description


async def test_refusals_each_with_its_reason(sqlite_mesh: Mesh) -> None:
    mesh = sqlite_mesh
    original = await mesh.top_up(1_000)
    transfer = await mesh.transfer(100)
    refund = await _refund(mesh, original.name, 100)
    cases = {
        "over what is left": (_refund(mesh, original.name, 901), "REFUND_AMOUNT_EXCEEDED"),
        "a refund of a refund": (_refund(mesh, refund.name, 10), "PAYMENT_NOT_REFUNDABLE"),
        "a payment to another account": (_refund(mesh, transfer.name, 10), "PAYMENT_NOT_REFUNDABLE"),
        "another partner's payment": (_refund(mesh, original.name, 10, partner="partner-2"), "RESOURCE_NOT_FOUND"),
        "no such payment": (_refund(mesh, "payments/01HZZZZZZZZZZZZZZZZZZZZZZZ", 10), "RESOURCE_NOT_FOUND"),
        "an unknown return reason": (_refund(mesh, original.name, 10, reason="WHIM"), "FIELD_INVALID"),
        "no return reason": (_refund(mesh, original.name, 10, reason=""), "FIELD_INVALID"),
        "a malformed name": (_refund(mesh, "transfers/x", 10), "FIELD_INVALID"),
    }
    for what, (call, expected) in cases.items():
        _, reason, _, _ = await _refused(call)
        assert reason == expected, what
    request = payment_pb2.RefundPaymentRequest(
        request_id=uuid.uuid4().hex, name=original.name, reason="CUST", amount=money(10, "GBP")
    )
    code, reason, _, fields = await _refused(mesh.payments.RefundPayment(request, metadata=_wallet_token(mesh)))
    assert (code, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, "CURRENCY_MISMATCH", ["amount.currency_code"])
    _, _, _, fields = await _refused(_refund(mesh, original.name, 10, reason="WHIM"))
    assert fields == ["reason"]
    # A rejected payment moved nothing: there is nothing to refund.
    rejected = await mesh.top_up(1_000_000)
    assert rejected.status_reason == "INSUFFICIENT_FUNDS"
    code, reason, metadata, _ = await _refused(_refund(mesh, rejected.name, 10))
    assert (code, reason, metadata["state"]) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PAYMENT_NOT_REFUNDABLE",
        "REJECTED",
    )


async def test_a_refund_the_wallet_cannot_cover_is_rejected_and_leaves_the_amount_refundable(sqlite_mesh: Mesh) -> None:
    mesh = sqlite_mesh
    original = await mesh.top_up(1_000)
    # The wallet spends what it got: its settlement account sends 900 to bob.
    await mesh.ledger.CreateTransfer(
        ledger_pb2.CreateTransferRequest(
            request_id=uuid.uuid4().hex,
            debit_account=f"accounts/{mesh.accounts['wallet-1']}",
            credit_account=f"accounts/{mesh.accounts['bob']}",
            amount=money(900),
            type=ledger_pb2.TRANSFER_TYPE_SINGLE_PHASE,
            reference="wallet payout",
        ),
        metadata=mesh.operator(),
    )
    rejected = await _refund(mesh, original.name, 500)
    assert (rejected.state, rejected.status_reason) == (payment_pb2.PAYMENT_STATE_REJECTED, "INSUFFICIENT_FUNDS")
    assert await mesh.obligation_state(rejected.name) == "RELEASED"
    assert await mesh.position("wallet-1") == (1_000, 0)
    assert (await _get(mesh, original.name)).refunded_amount.minor_units == 0
    settled = await _refund(mesh, original.name, 100)  # what the wallet still holds
    assert settled.state == payment_pb2.PAYMENT_STATE_SETTLED
    assert await mesh.ledger_balanced()


async def test_a_retry_answers_the_same_refund_and_another_payload_is_refused(sqlite_mesh: Mesh) -> None:
    mesh = sqlite_mesh
    original = await mesh.top_up(1_000)
    first = await _refund(mesh, original.name, request_id="refund-1")  # all of it
    again = await _refund(mesh, original.name, request_id="refund-1")
    assert again.name == first.name and again.state == payment_pb2.PAYMENT_STATE_SETTLED
    code, reason, _, _ = await _refused(_refund(mesh, original.name, 5, request_id="refund-1"))
    assert (code, reason) == (grpc.StatusCode.ALREADY_EXISTS, "REQUEST_ID_REUSED")
    assert await mesh.balance("alice") == (100_000, 100_000)


async def test_a_refund_needs_no_live_consent(sqlite_mesh: Mesh) -> None:
    mesh = sqlite_mesh
    original = await mesh.top_up(400)
    del mesh.consents.views["c1"]  # the consent ended; the customer is still owed the refund
    refund = await _refund(mesh, original.name)
    assert refund.state == payment_pb2.PAYMENT_STATE_SETTLED


async def test_the_bank_refunds_a_transfer_and_the_operator_is_in_the_audit_trail(sqlite_mesh: Mesh) -> None:
    mesh = sqlite_mesh
    transfer = await mesh.transfer(600)
    answer = await mesh.payment_admin.OperatorRefundPayment(
        payment_admin_pb2.OperatorRefundPaymentRequest(
            request_id="ops-refund-1", name=transfer.name, amount=money(250), reason="UPAY"
        ),
        metadata=mesh.operator(),
    )
    refund = answer.refund
    assert refund.state == payment_pb2.PAYMENT_STATE_SETTLED
    assert (refund.debtor_account, refund.creditor_account) == (transfer.creditor_account, transfer.debtor_account)
    assert await mesh.obligation_state(refund.name) == ""  # inside the bank: no obligation
    assert await mesh.balance("alice") == (100_000 - 600 + 250, 100_000 - 600 + 250)
    auditor = (("authorization", f"Bearer {mesh.issuer.token('service:auditor', scopes=['audit:read'])}"),)
    stub = audit_pb2_grpc.AuditServiceStub(mesh.channels["payment"])
    await mesh.servers["payment"].audit.seal()
    records = await stub.ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(
            payment=refund.name.removeprefix("payments/"), action_prefix="payment.refund"
        ),
        metadata=auditor,
    )
    (recorded,) = records.records
    assert (recorded.actor, recorded.actor_kind) == ("service:ops", "operator")
    assert json.loads(recorded.details_json)["amount_minor"] == 250
    # A partner may not do the same.
    _, reason, _, _ = await _refused(_refund(mesh, transfer.name, 10))
    assert reason == "PAYMENT_NOT_REFUNDABLE"


async def test_two_refunds_at_once_never_exceed_the_payment(mesh: Mesh) -> None:
    """Both pass the first check; the second check, in the writers' critical section, sees the
    other refund and refuses one of them."""
    original = await mesh.top_up(1_000)
    outcomes = await asyncio.gather(*(_refund(mesh, original.name, 600) for _ in range(2)), return_exceptions=True)
    settled = [o for o in outcomes if isinstance(o, payment_pb2.Payment)]
    refused = [decode_rpc_error(o).reason for o in outcomes if isinstance(o, grpc.aio.AioRpcError)]
    assert len(settled) == 1 and refused == ["REFUND_AMOUNT_EXCEEDED"], outcomes
    assert (await _get(mesh, original.name)).refunded_amount.minor_units == 600


async def test_refunds_count_against_no_limit_of_the_consent(sqlite_mesh: Mesh) -> None:
    mesh = sqlite_mesh
    mesh.grant("c1", "partner-1", ["alice", "bob"], period_limit_minor=1_000, limit_currency="EUR", period="DAY")
    original = await mesh.top_up(600)
    await _refund(mesh, original.name)
    # Had the refund counted as spending under the consent, 600 + 600 would leave no room.
    assert (await mesh.top_up(400)).state == payment_pb2.PAYMENT_STATE_SETTLED
    code, reason, _, _ = await _refused(mesh.top_up(1))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONSENT_LIMIT_EXCEEDED")
