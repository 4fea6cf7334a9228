"""Payments end to end over real gRPC: account + settlement + payment in-process, SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest

from meshlib.grpc_errors import decode_rpc_error
from openbank.payment.v1 import payment_pb2
from tests.integration.payment.mesh import Mesh, running_mesh, standard_mesh
from tests.support.servers import create_database


@pytest.fixture(params=["sqlite", "postgresql"])
async def urls(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """One database per service, on SQLite files or a throwaway PostgreSQL."""
    names = ("account", "settlement", "payment")
    if request.param == "sqlite":
        yield {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in names}
        return
    server = request.getfixturevalue("postgres_srv")
    yield {n: await create_database(server, f"t_{n}_{uuid.uuid4().hex[:12]}") for n in names}


@pytest.fixture(params=["batched", "plain"])
async def mesh(request: pytest.FixtureRequest, urls: dict[str, str]) -> AsyncIterator[Mesh]:
    """The standard mesh, with the speed-up adapters (batch rpcs, group commit, waves) and without."""
    async with running_mesh(urls, payment_batching=request.param == "batched") as running:
        yield await standard_mesh(running)


async def test_a_wallet_top_up_settles_and_balances_positions_and_states_agree(mesh: Mesh) -> None:
    payment = await mesh.top_up(2_500)
    assert payment.state == payment_pb2.PAYMENT_STATE_SETTLED, payment
    assert payment.iso20022_status == "ACSC"
    assert await mesh.balance("alice") == (97_500, 97_500)
    assert await mesh.position("bank") == (-2_500, 0)
    assert await mesh.position("wallet-1") == (2_500, 0)
    assert await mesh.hold_state(payment.name) == "POSTED"
    assert await mesh.obligation_state(payment.name) == "COMMITTED"
    assert await mesh.ledger_balanced()
    steps = [(e.step, e.outcome) for e in await mesh.audit(payment.name)]
    assert steps == [
        ("validate", "succeeded"),
        ("hold_funds", "started"),  # the hold and the reservation are sent together
        ("reserve_position", "started"),
        ("hold_funds", "succeeded"),
        ("reserve_position", "succeeded"),
        ("post_funds", "started"),
        ("post_funds", "succeeded"),
        ("commit_obligation", "started"),
        ("commit_obligation", "succeeded"),
    ]
    assert all(len(e.trace_id) == 32 for e in await mesh.audit(payment.name))


async def test_a_transfer_between_bank_accounts_skips_settlement(mesh: Mesh) -> None:
    payment = await mesh.transfer(1_000)
    assert payment.state == payment_pb2.PAYMENT_STATE_SETTLED
    assert await mesh.balance("alice") == (99_000, 99_000)
    assert await mesh.balance("bob") == (1_000, 1_000)
    assert await mesh.position("bank") == (0, 0)
    assert await mesh.obligation_state(payment.name) == ""
    trail = await mesh.audit(payment.name)
    # The plan of a transfer inside the bank has no settlement steps.
    assert [e.step for e in trail] == [
        "validate",
        "hold_funds",
        "hold_funds",
        "post_funds",
        "post_funds",
    ]


async def test_saga_rejections_leave_no_money_moved(mesh: Mesh) -> None:
    # INSUFFICIENT_FUNDS: the ledger refuses the hold.
    poor = await mesh.top_up(200_000)
    assert (poor.state, poor.status_reason) == (payment_pb2.PAYMENT_STATE_REJECTED, "INSUFFICIENT_FUNDS")
    assert poor.iso20022_status == "RJCT" and poor.status_reason_message
    # The reservation was sent beside the hold: it is released, so no position is left reserved.
    assert await mesh.position("bank") == (0, 0)
    assert ("release_obligation", "compensated") in [(e.step, e.outcome) for e in await mesh.audit(poor.name)]
    # NET_DEBIT_CAP_EXCEEDED: the hold is made, then voided when the reservation fails.
    await _set_bank_cap(mesh, 100)
    capped = await mesh.top_up(5_000)
    assert (capped.state, capped.status_reason) == (payment_pb2.PAYMENT_STATE_REJECTED, "NET_DEBIT_CAP_EXCEEDED")
    assert await mesh.hold_state(capped.name) == "VOIDED"
    steps = [(e.step, e.outcome) for e in await mesh.audit(capped.name)]
    # The refused reservation holds nothing: only the hold is undone.
    assert ("void_funds", "compensated") in steps and ("release_obligation", "compensated") not in steps
    await _set_bank_cap(mesh, 1_000_000)
    # PARTICIPANT_NOT_ACTIVE: the wallet participant is deactivated.
    await _participant_active(mesh, "wallet-1", False)
    inactive = await mesh.top_up(5_000)
    assert (inactive.state, inactive.status_reason) == (payment_pb2.PAYMENT_STATE_REJECTED, "PARTICIPANT_NOT_ACTIVE")
    await _participant_active(mesh, "wallet-1", True)
    # ACCOUNT_NOT_ACTIVE: a frozen debtor account is refused before any money moves.
    await _freeze(mesh, "alice", True)
    code, reason = await _refused(mesh.top_up(5_000))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "ACCOUNT_NOT_ACTIVE")
    await _freeze(mesh, "alice", False)
    assert await mesh.balance("alice") == (100_000, 100_000)
    assert await mesh.position("bank") == (0, 0)
    assert await mesh.ledger_balanced()


async def _set_bank_cap(mesh: Mesh, cap: int) -> None:
    from openbank.settlement.v1 import settlement_admin_pb2, settlement_admin_pb2_grpc
    from tests.integration.payment.mesh import money

    admin = settlement_admin_pb2_grpc.SettlementAdminServiceStub(mesh.channels["settlement"])
    await admin.UpdateNetDebitCap(
        settlement_admin_pb2.UpdateNetDebitCapRequest(
            request_id=uuid.uuid4().hex, participant=f"participants/{mesh.participants['bank']}", cap=money(cap)
        ),
        metadata=mesh.operator(),
    )


async def _participant_active(mesh: Mesh, label: str, active: bool) -> None:
    from openbank.settlement.v1 import settlement_admin_pb2, settlement_admin_pb2_grpc

    admin = settlement_admin_pb2_grpc.SettlementAdminServiceStub(mesh.channels["settlement"])
    name = f"participants/{mesh.participants[label]}"
    if active:
        request = settlement_admin_pb2.ActivateParticipantRequest(request_id=uuid.uuid4().hex, name=name)
        await admin.ActivateParticipant(request, metadata=mesh.operator())
    else:
        request = settlement_admin_pb2.DeactivateParticipantRequest(request_id=uuid.uuid4().hex, name=name)
        await admin.DeactivateParticipant(request, metadata=mesh.operator())


async def _freeze(mesh: Mesh, label: str, frozen: bool) -> None:
    from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc

    admin = account_admin_pb2_grpc.AccountAdminServiceStub(mesh.channels["account"])
    name = f"accounts/{mesh.accounts[label]}"
    if frozen:
        request = account_admin_pb2.FreezeAccountRequest(request_id=uuid.uuid4().hex, name=name)
        await admin.FreezeAccount(request, metadata=mesh.operator())
    else:
        request = account_admin_pb2.UnfreezeAccountRequest(request_id=uuid.uuid4().hex, name=name)
        await admin.UnfreezeAccount(request, metadata=mesh.operator())


async def _refused(call) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code(), decode_rpc_error(raised.value).reason


@pytest.fixture
async def sqlite_mesh(tmp_path) -> AsyncIterator[Mesh]:  # type: ignore[no-untyped-def]
    """The standard mesh on SQLite only (checks that do not depend on the store)."""
    urls = {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in ("account", "settlement", "payment")}
    async with running_mesh(urls) as running:
        yield await standard_mesh(running)


async def test_checks_before_money_moves_fail_the_call_and_create_no_payment(sqlite_mesh: Mesh) -> None:
    import datetime as dt

    from services.payment.domain.checks import PartnerLimits

    mesh = sqlite_mesh
    # Consent limits: per payment, then per period (rejected payments do not count).
    mesh.grant(
        "c1",
        "partner-1",
        ["alice", "bob"],
        per_payment_limit_minor=3_000,
        period_limit_minor=5_000,
        limit_currency="EUR",
        period="DAY",
    )
    assert await _refused(mesh.top_up(3_001)) == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_LIMIT_EXCEEDED")
    assert (await mesh.top_up(3_000)).state == payment_pb2.PAYMENT_STATE_SETTLED
    assert await _refused(mesh.top_up(2_001)) == (grpc.StatusCode.FAILED_PRECONDITION, "CONSENT_LIMIT_EXCEEDED")
    mesh.grant("c1", "partner-1", ["alice", "bob"])
    # Partner limits.
    mesh.partners.by_partner["partner-1"] = PartnerLimits("partner-1", per_payment_minor=4_000, daily_minor=6_000)
    assert await _refused(mesh.top_up(4_001)) == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_LIMIT_EXCEEDED")
    assert await _refused(mesh.top_up(3_001)) == (grpc.StatusCode.FAILED_PRECONDITION, "PARTNER_LIMIT_EXCEEDED")
    mesh.partners.by_partner.clear()
    # Risk: a first payment to a new beneficiary above the threshold (500 000 in the default rules),
    # far above the customer's average, without the customer present, waits (nothing moves).
    await mesh.open_account("carol")
    held = await mesh.transfer(600_000, creditor="carol")
    assert {(held.state, held.status_reason)} <= {
        (payment_pb2.PAYMENT_STATE_AWAITING_AUTHORISATION, "AUTHORISATION_REQUIRED"),
        (payment_pb2.PAYMENT_STATE_PENDING_REVIEW, "HELD_FOR_REVIEW"),
    }
    # Consent state and scope of the consent.
    mesh.grant("c1", "partner-1", ["alice", "bob"], paused=True)
    assert await _refused(mesh.top_up(100)) == (grpc.StatusCode.PERMISSION_DENIED, "CONSENT_PAUSED")
    mesh.grant("c1", "partner-1", ["alice", "bob"], expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    assert await _refused(mesh.top_up(100)) == (grpc.StatusCode.PERMISSION_DENIED, "CONSENT_EXPIRED")
    mesh.grant("c1", "partner-1", ["bob"])
    assert await _refused(mesh.top_up(100)) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")
    mesh.grant("c1", "partner-1", ["alice", "bob"])
    # Request shape and beneficiary.
    bad = payment_pb2.CreatePaymentRequest(request_id="r-bad", debtor_account="acc/x", type=0)
    code, reason = await _refused(mesh.payments.CreatePayment(bad, metadata=mesh.partner()))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "FIELD_INVALID")
    other_wallet = payment_pb2.CreatePaymentRequest(
        request_id="r-other",
        debtor_account=f"accounts/{mesh.accounts['alice']}",
        creditor_wallet="partners/partner-2",
        amount=payment_pb2.Payment().amount.__class__(currency_code="EUR", minor_units=100),
        type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
    )
    code, reason = await _refused(mesh.payments.CreatePayment(other_wallet, metadata=mesh.partner()))
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BENEFICIARY_INVALID")
    listed = await mesh.payments.ListPayments(payment_pb2.ListPaymentsRequest(), metadata=mesh.partner())
    # Only the one settled payment exists besides the one the risk rules hold.
    assert len([p for p in listed.payments if p.name != held.name]) == 1


async def test_idempotent_replay_and_reused_request_id(sqlite_mesh: Mesh) -> None:
    mesh = sqlite_mesh
    first = await mesh.top_up(1_000, request_id="pay-1")
    again = await mesh.top_up(1_000, request_id="pay-1")
    assert again.name == first.name and again.state == payment_pb2.PAYMENT_STATE_SETTLED
    assert await _refused(mesh.top_up(1_001, request_id="pay-1")) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "REQUEST_ID_REUSED",
    )
    # A replay gets its first answer even when the checks would now refuse a new payment.
    mesh.grant("c1", "partner-1", ["alice"], state="REVOKED")
    after_revocation = await mesh.top_up(1_000, request_id="pay-1")
    assert after_revocation.name == first.name and after_revocation.state == payment_pb2.PAYMENT_STATE_SETTLED
    assert await _refused(mesh.top_up(1_000, request_id="pay-new")) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CONSENT_REVOKED",
    )
    mesh.grant("c1", "partner-1", ["alice"])
    # The key is per partner: another partner may use the same request_id.
    await mesh.open_account("wallet-2", customer=None)
    await mesh.register("wallet-2", partner="partner-2", account_label="wallet-2", cap=1_000)
    mesh.grant("c2", "partner-2", ["alice"])
    other = await mesh.top_up(1_000, request_id="pay-1", partner="partner-2", consent="c2")
    assert other.name != first.name
    assert await mesh.balance("alice") == (98_000, 98_000)
    # Payments of another consent (or partner) do not exist for the caller.
    code, reason = await _refused(
        mesh.payments.GetPayment(payment_pb2.GetPaymentRequest(name=other.name), metadata=mesh.partner())
    )
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")


async def test_list_payments_pages_newest_first_with_filters(sqlite_mesh: Mesh) -> None:
    mesh = sqlite_mesh
    rejected = await mesh.top_up(200_000)  # insufficient funds: REJECTED, filtered out below
    assert rejected.state == payment_pb2.PAYMENT_STATE_REJECTED
    made = [await mesh.top_up(100 + i) for i in range(5)]
    seen, token = [], ""
    while True:
        page = await mesh.payments.ListPayments(
            payment_pb2.ListPaymentsRequest(page_size=2, page_token=token, state=payment_pb2.PAYMENT_STATE_SETTLED),
            metadata=mesh.partner(),
        )
        seen += [p.name for p in page.payments]
        token = page.next_page_token
        if not token:
            break
    assert seen == [p.name for p in reversed(made)]
    code, reason = await _refused(
        mesh.payments.ListPayments(
            payment_pb2.ListPaymentsRequest(page_size=2, page_token="garbage"), metadata=mesh.partner()
        )
    )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "PAGE_TOKEN_INVALID")


async def test_watch_streams_events_and_resumes_from_a_cursor(sqlite_mesh: Mesh) -> None:
    mesh = sqlite_mesh
    stream = mesh.payments.WatchPayments(
        payment_pb2.WatchPaymentsRequest(after_cursor="0", include_snapshot=True), metadata=mesh.partner()
    )
    first = await mesh.top_up(1_000)
    events = []
    async for message in stream:
        events.append(message.event)
        if message.event.state == payment_pb2.PAYMENT_STATE_SETTLED:
            break
    stream.cancel()
    assert [e.state for e in events] == [
        payment_pb2.PAYMENT_STATE_RECEIVED,
        payment_pb2.PAYMENT_STATE_ACCEPTED,
        payment_pb2.PAYMENT_STATE_SETTLEMENT_IN_PROCESS,
        payment_pb2.PAYMENT_STATE_SETTLED,
    ]
    assert events[0].previous_state == payment_pb2.PAYMENT_STATE_UNSPECIFIED
    assert events[-1].snapshot.name == first.name and all(e.payment == first.name for e in events)
    # Each snapshot is the payment as it was right after that change.
    assert [e.snapshot.state for e in events] == [e.state for e in events]
    # Reconnect after the second event: the rest comes again, nothing lost or repeated, then live events.
    second = await mesh.top_up(2_000)
    resumed = mesh.payments.WatchPayments(
        payment_pb2.WatchPaymentsRequest(after_cursor=events[1].cursor), metadata=mesh.partner()
    )
    replayed = []
    async for message in resumed:
        replayed.append(message.event)
        if message.event.payment == second.name and message.event.state == payment_pb2.PAYMENT_STATE_SETTLED:
            break
    resumed.cancel()
    assert [e.cursor for e in replayed[:2]] == [e.cursor for e in events[2:]]
    assert len(replayed) == 2 + 4
    bad = mesh.payments.WatchPayments(payment_pb2.WatchPaymentsRequest(after_cursor="x!"), metadata=mesh.partner())
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in bad:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def _recorded_not_started(mesh: Mesh, amount: int) -> str:
    """A top-up recorded RECEIVED whose driver was lost before it asked for money (as a payment
    due later will be): written straight into the payment database, its lease run out."""
    from meshlib.ids import time_ordered_id
    from meshlib.money import Amount
    from services.payment.domain.payments import Payment, PaymentState
    from services.payment.domain.saga import Outcome, RecordedStep, Step, StepRecord
    from services.payment.unit_of_work import PaymentUnitOfWork
    from tests.integration.payment.mesh import CUSTOMER

    now = dt.datetime.now(dt.UTC)
    payment = Payment(
        payment_id=time_ordered_id(),
        partner_id="partner-1",
        consent_id="c1",
        debtor_account_id=mesh.accounts["alice"],
        creditor_account_id=None,
        creditor_wallet_partner_id="partner-1",
        amount=Amount("EUR", amount),
        payment_type="WALLET_TOP_UP",
        state=PaymentState.RECEIVED,
        created_at=now,
        updated_at=now,
        customer_id=CUSTOMER,
        creditor_ledger_account_id=mesh.accounts["wallet-1"],
        payer_participant_id=mesh.participants["bank"],
        payee_participant_id=mesh.participants["wallet-1"],
    )
    async with PaymentUnitOfWork(mesh.servers["payment"].runtime.database) as uow:
        await uow.payments.add(payment, lease_until=now - dt.timedelta(seconds=1))
        validated = StepRecord(Step.VALIDATE, Outcome.SUCCEEDED)
        await uow.steps.add_many([RecordedStep(payment.payment_id, validated, "0" * 32, now)])
        await uow.events.add(payment, None, PaymentState.RECEIVED, "", now)
        await uow.commit()
    return f"payments/{payment.payment_id}"


async def test_cancel_before_funds_are_held_and_recovery_of_the_rest(sqlite_mesh: Mesh) -> None:
    from google.protobuf import duration_pb2

    from openbank.payment.v1 import payment_admin_pb2

    mesh = sqlite_mesh
    kept = await _recorded_not_started(mesh, 1_000)
    dropped = await _recorded_not_started(mesh, 2_000)
    cancel = payment_pb2.CancelPaymentRequest(request_id="cancel-1", name=dropped)
    cancelled = (await mesh.payments.CancelPayment(cancel, metadata=mesh.partner())).payment
    assert (cancelled.state, cancelled.iso20022_status) == (payment_pb2.PAYMENT_STATE_CANCELLED, "CANC")
    replay = (await mesh.payments.CancelPayment(cancel, metadata=mesh.partner())).payment
    assert replay.state == payment_pb2.PAYMENT_STATE_CANCELLED
    recover = payment_admin_pb2.RecoverPaymentsRequest(
        request_id="recover-1", older_than=duration_pb2.Duration(seconds=0)
    )
    result = await mesh.payment_admin.RecoverPayments(recover, metadata=mesh.operator())
    assert (result.examined_count, result.completed_count, result.pending_count) == (1, 1, 0)
    again = await mesh.payment_admin.RecoverPayments(recover, metadata=mesh.operator())
    assert again == result
    got = await mesh.payments.GetPayment(payment_pb2.GetPaymentRequest(name=kept), metadata=mesh.partner())
    assert got.payment.state == payment_pb2.PAYMENT_STATE_SETTLED
    late = payment_pb2.CancelPaymentRequest(request_id="cancel-2", name=kept)
    code, reason = await _refused(mesh.payments.CancelPayment(late, metadata=mesh.partner()))
    assert (code, reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PAYMENT_NOT_CANCELLABLE")
    assert await mesh.balance("alice") == (99_000, 99_000)
    assert await mesh.ledger_balanced()


async def test_two_replicas_on_one_postgresql_share_the_event_stream(request, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from meshlib.app import start_service
    from meshlib.auth.verifier import static_jwks

    server = request.getfixturevalue("postgres_srv")
    names = ("account", "settlement", "payment")
    urls = {n: await create_database(server, f"t_{n}_{uuid.uuid4().hex[:12]}") for n in names}
    async with running_mesh(urls) as running:
        mesh = await standard_mesh(running)
        replica = await start_service(
            mesh.payment_spec, mesh.payment_settings, jwks_fetcher=static_jwks(mesh.issuer.jwks)
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{replica.port}")
        try:
            from openbank.payment.v1 import payment_pb2_grpc

            watcher = payment_pb2_grpc.PaymentServiceStub(channel).WatchPayments(
                payment_pb2.WatchPaymentsRequest(after_cursor="0"), metadata=mesh.partner()
            )
            made = [await mesh.top_up(100 + i) for i in range(3)]  # created on the first replica
            seen = []
            async for message in watcher:
                seen.append(message.event)
                if len(seen) == 4 * len(made):
                    break
            watcher.cancel()
            assert [int(e.cursor) for e in seen] == sorted(int(e.cursor) for e in seen)
            assert {e.payment for e in seen} == {p.name for p in made}
        finally:
            await channel.close()
            await replica.stop(0)


async def test_another_customers_account_slipped_into_a_consent_cannot_be_debited(sqlite_mesh: Mesh) -> None:
    mesh = sqlite_mesh
    await mesh.open_account("mallory-victim", customer="cust-2", funds=50_000)
    mesh.grant("c-evil", "partner-1", ["alice", "mallory-victim"])
    code, reason = await _refused(mesh.top_up(1_000, debtor="mallory-victim", consent="c-evil"))
    assert (code, reason) == (grpc.StatusCode.NOT_FOUND, "RESOURCE_NOT_FOUND")
    # Nothing moved and no payment exists.
    listed = await mesh.payments.ListPayments(
        payment_pb2.ListPaymentsRequest(), metadata=mesh.partner("partner-1", "c-evil")
    )
    assert list(listed.payments) == []
