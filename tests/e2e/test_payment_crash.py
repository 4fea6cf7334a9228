"""Crash tests with real processes: the payment service dies at every saga step, of payments
and of refunds
(``OBM_PAYMENT_FAILPOINT`` makes it ``os._exit(137)`` right there), account and settlement are
SIGKILLed mid-run; after restarts every payment ends SETTLED or REJECTED, the ledger nets to
zero with no hold left, positions equal the committed obligations, and no money moved twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc
from openbank.common.v1 import consent_permission_pb2
from openbank.identity.v1 import token_pb2
from openbank.payment.v1 import payment_pb2
from openbank.settlement.v1 import settlement_admin_pb2, settlement_admin_pb2_grpc
from tests.e2e.payment_harness import ServiceProcess, client_secret, internal_clients_json
from tests.integration.identity.harness import Identity, Partner, bearer, pkce_pair, start_identity, stop_identity
from tests.integration.payment.mesh import Mesh, money

pytestmark = pytest.mark.e2e

FAILPOINTS = [
    "after_hold_funds_started",
    "after_hold_funds",
    "after_reserve_position_started",
    "after_reserve_position",
    "after_post_funds_started",
    "after_post_funds",
    "after_commit_obligation_started",
]
FUNDS = 1_000_000


class ProcessMesh(Mesh):
    """The in-process test helpers, with identity-issued tokens instead of a test issuer."""

    ops_metadata: tuple[tuple[str, str], ...] = ()
    partner_metadata: tuple[tuple[str, str], ...] = ()

    def operator(self) -> tuple[tuple[str, str], ...]:
        """The ``ops`` internal client's token."""
        return self.ops_metadata

    def partner(self, partner_id: str = "", consent_id: str = "") -> tuple[tuple[str, str], ...]:
        """The partner's consent-bound token."""
        return self.partner_metadata


async def _client_token(identity: Identity, client_id: str, scopes: list[str]) -> str:
    answer = await identity.tokens.IssueToken(
        token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
            client_id=client_id,
            client_secret=client_secret(client_id),
            scopes=scopes,
        )
    )
    return answer.access_token


async def _set_bank_cap(mesh: Mesh, cap: int) -> None:
    admin = settlement_admin_pb2_grpc.SettlementAdminServiceStub(mesh.channels["settlement"])
    await admin.UpdateNetDebitCap(
        settlement_admin_pb2.UpdateNetDebitCapRequest(
            request_id=uuid.uuid4().hex, participant=f"participants/{mesh.participants['bank']}", cap=money(cap)
        ),
        metadata=mesh.operator(),
    )


async def _all_payments(mesh: Mesh) -> list[payment_pb2.Payment]:
    found, token = [], ""
    while True:
        page = await mesh.payments.ListPayments(
            payment_pb2.ListPaymentsRequest(page_size=100, page_token=token), metadata=mesh.partner(), timeout=5
        )
        found += list(page.payments)
        token = page.next_page_token
        if not token:
            return found


async def _wait_all_final(mesh: Mesh, expected: int, timeout: float = 40.0) -> list[payment_pb2.Payment]:
    final = {payment_pb2.PAYMENT_STATE_SETTLED, payment_pb2.PAYMENT_STATE_REJECTED}
    deadline = time.monotonic() + timeout
    while True:
        payments = await _all_payments(mesh)
        if len(payments) == expected and all(p.state in final for p in payments):
            return payments
        if time.monotonic() > deadline:
            raise AssertionError([(p.name, p.iso20022_status) for p in payments if p.state not in final])
        await asyncio.sleep(0.3)


@dataclass
class CrashMesh:
    """Identity in-process, account, settlement and payment as processes, a partner with an
    authorised consent over alice's funded account, the bank's and the wallet's participants."""

    identity: Identity
    mesh: ProcessMesh
    partner: Partner
    account: ServiceProcess
    settlement: ServiceProcess
    payment: ServiceProcess

    async def top_up(self, amount: int) -> payment_pb2.Payment:
        return await self.mesh.top_up(amount, request_id=uuid.uuid4().hex, partner=self.partner.partner_id)


@contextlib.asynccontextmanager
async def crash_mesh(tmp_path: Path, batching: str) -> AsyncIterator[CrashMesh]:
    """The processes started (payment is left to each test: it starts it with its failpoint)."""
    identity = await start_identity(
        f"sqlite+aiosqlite:///{tmp_path / 'identity.db'}", internal_clients=internal_clients_json()
    )
    identity_target = f"127.0.0.1:{identity.server.port}"
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: burst, kind: max_payments_per_window, window_seconds: 60, max_count: 1000}\n")
    account = ServiceProcess("account", tmp_path, identity_target, {})
    settlement = ServiceProcess("settlement", tmp_path, identity_target, {"account": account.target})
    payment = ServiceProcess(
        "payment",
        tmp_path,
        identity_target,
        {"account": account.target, "settlement": settlement.target},
        extra_env={
            "OBM_VELOCITY_RULES_FILE": str(rules),
            "OBM_SAGA_LEASE_SECONDS": "1",
            "OBM_RECOVERY_INTERVAL_SECONDS": "0.3",
            "OBM_DOWNSTREAM_DEADLINE_SECONDS": "1",
            "OBM_PAYMENT_BATCHING": batching,
        },
    )
    channels: dict[str, grpc.aio.Channel] = {}
    try:
        await asyncio.gather(account.start(), settlement.start())
        channels = {
            "account": grpc.aio.insecure_channel(account.target),
            "settlement": grpc.aio.insecure_channel(settlement.target),
            "payment": grpc.aio.insecure_channel(payment.target),
        }
        mesh = ProcessMesh(None, None, None, {}, channels)  # type: ignore[arg-type]
        mesh.ops_metadata = bearer(
            await _client_token(
                identity,
                "ops",
                [
                    "ledger:admin",
                    "ledger:read",
                    "settlement:admin",
                    "settlement:read",
                    "settlement:write",
                    "payments:admin",
                ],
            )
        )
        # A partner, a customer and an authorised consent over the customer's account (real identity flow).
        partner = await identity.register_partner()
        customer = await identity.create_customer()
        customer_id = customer.name.rsplit("/", 1)[-1]
        await mesh.open_account("alice", customer=customer_id, funds=FUNDS)
        await mesh.open_account("bank-settlement", customer=None)
        await mesh.open_account("wallet", customer=None)
        await mesh.register("bank", partner=None, account_label="bank-settlement", cap=10 * FUNDS)
        await mesh.register("wallet", partner=partner.partner_id, account_label="wallet", cap=FUNDS)
        verifier, challenge = pkce_pair()
        consent = await identity.create_consent(
            partner,
            challenge,
            permissions=(
                consent_permission_pb2.CONSENT_PERMISSION_INITIATE_PAYMENTS,
                consent_permission_pb2.CONSENT_PERMISSION_SCHEDULE_PAYMENTS,
                consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES,
            ),
        )
        authorised = await identity.authorise(consent.name, customer, accounts=(f"accounts/{mesh.accounts['alice']}",))
        tokens = await identity.exchange(partner, authorised.authorization_code, verifier)
        mesh.partner_metadata = bearer(tokens.access_token)

        yield CrashMesh(identity, mesh, partner, account, settlement, payment)
    finally:
        for channel in channels.values():
            await channel.close()
        for process in (payment, settlement, account):
            process.stop()
        await stop_identity(identity)


@pytest.mark.parametrize("batching", ["true", "false"], ids=["batched", "plain"])
async def test_every_payment_ends_settled_or_rejected_after_crashes_at_every_step(tmp_path, batching: str) -> None:  # type: ignore[no-untyped-def]
    async with crash_mesh(tmp_path, batching) as crashing:
        mesh, payment, account, settlement = crashing.mesh, crashing.payment, crashing.account, crashing.settlement
        channels, top_up = mesh.channels, crashing.top_up
        # 1. The payment service dies at each step of the saga.
        for index, failpoint in enumerate(FAILPOINTS):
            await payment.start(OBM_PAYMENT_FAILPOINT=failpoint, OBM_RECOVERY_INTERVAL_SECONDS="0")
            with pytest.raises(grpc.aio.AioRpcError):
                await top_up(1_000 + index)
            assert await payment.wait_exit() == 137, failpoint
        # ... and in the middle of a compensation (the bank's cap refuses the reservation).
        await _set_bank_cap(mesh, 500)
        await payment.start(OBM_PAYMENT_FAILPOINT="after_void_funds", OBM_RECOVERY_INTERVAL_SECONDS="0")
        with pytest.raises(grpc.aio.AioRpcError):
            await top_up(1_500)
        assert await payment.wait_exit() == 137
        await _set_bank_cap(mesh, 10 * FUNDS)
        await payment.start()
        # Recovery carries each crashed payment forward with the peers up: those caught before
        # the post too (their steps sent again with the same keys), none rolled back as
        # SERVICE_UNAVAILABLE; only the one whose reservation was refused is undone.
        crashed = await _wait_all_final(mesh, len(FAILPOINTS) + 1)
        assert {p.amount.minor_units: (p.state, p.status_reason) for p in crashed} == {
            **{1_000 + index: (payment_pb2.PAYMENT_STATE_SETTLED, "") for index in range(len(FAILPOINTS))},
            1_500: (payment_pb2.PAYMENT_STATE_REJECTED, "NET_DEBIT_CAP_EXCEEDED"),
        }

        # 2. Account, then settlement, SIGKILLed: the saga stops where it is; recovery finishes the job.
        account.kill()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await top_up(2_000)
        # The debtor account is checked with the ledger before anything is recorded: no payment.
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        await account.start()
        # Once the ledger is back, payments settle again (and the new payment process has learnt
        # where the wallets' settlement accounts are, which it needs while settlement is down).
        assert (await top_up(1_999)).state == payment_pb2.PAYMENT_STATE_SETTLED
        settlement.kill()
        stuck_on_settlement = await top_up(2_001)
        assert stuck_on_settlement.state != payment_pb2.PAYMENT_STATE_SETTLED
        await settlement.start()

        # 3. Settlement SIGKILLed in the middle of a burst of payments.
        burst = [asyncio.create_task(top_up(3_000 + i)) for i in range(8)]
        await asyncio.sleep(0.15)
        settlement.kill()
        results = await asyncio.gather(*burst, return_exceptions=True)
        await settlement.start()
        burst_created = sum(1 for r in results if isinstance(r, payment_pb2.Payment))

        # 4. Account SIGKILLed in the middle of a burst.
        burst = [asyncio.create_task(top_up(4_000 + i)) for i in range(8)]
        await asyncio.sleep(0.15)
        account.kill()
        results = await asyncio.gather(*burst, return_exceptions=True)
        await account.start()
        burst_created += sum(1 for r in results if isinstance(r, payment_pb2.Payment))

        expected = len(FAILPOINTS) + 1 + 2 + burst_created
        payments = await _wait_all_final(mesh, expected)

        # Every payment: SETTLED with its hold posted and obligation committed, or REJECTED with
        # nothing left held or reserved.
        settled = 0
        for p in payments:
            hold, obligation = await mesh.hold_state(p.name), await mesh.obligation_state(p.name)
            if p.state == payment_pb2.PAYMENT_STATE_SETTLED:
                assert (hold, obligation) == ("POSTED", "COMMITTED"), p.name
                settled += p.amount.minor_units
            else:
                assert hold in ("", "VOIDED") and obligation in ("", "RELEASED"), (p.name, hold, obligation)
        # Payments the saga had passed the post for must have settled (never rolled back).
        crash_settled = {p.amount.minor_units for p in payments if p.state == payment_pb2.PAYMENT_STATE_SETTLED}
        assert {1_005, 1_006} <= crash_settled
        (compensating,) = [p for p in payments if p.amount.minor_units == 1_500]
        assert (compensating.state, compensating.status_reason) == (
            payment_pb2.PAYMENT_STATE_REJECTED,
            "NET_DEBIT_CAP_EXCEEDED",
        )
        # The ledger nets to zero and holds nothing; positions equal committed obligations: money moved once.
        admin = account_admin_pb2_grpc.AccountAdminServiceStub(channels["account"])
        totals = await admin.GetLedgerTotals(account_admin_pb2.GetLedgerTotalsRequest(), metadata=mesh.operator())
        (eur,) = [t for t in totals.totals if t.currency_code == "EUR"]
        assert eur.balanced and eur.net.minor_units == 0
        assert eur.pending_debits.minor_units == eur.pending_credits.minor_units == 0
        assert eur.posted_debits.minor_units == FUNDS + settled
        assert await mesh.position("bank") == (-settled, 0)
        assert await mesh.position("wallet") == (settled, 0)


# With the production wiring (batched) only: the plain adapters' crash behaviour is the payment
# test's above, and a refund records no differently in either (the suite's time budget).
@pytest.mark.parametrize("batching", ["true"], ids=["batched"])
async def test_every_refund_ends_settled_or_rejected_after_crashes_at_every_step(tmp_path, batching: str) -> None:  # type: ignore[no-untyped-def]
    """A refund runs the top-up's saga backwards (out of the wallet's settlement account, the
    wallet owing the bank): the payment service dies at each of its steps, then recovery ends
    each refund, and money and positions agree with exactly the refunds that settled."""
    async with crash_mesh(tmp_path, batching) as crashing:
        mesh, payment = crashing.mesh, crashing.payment
        await payment.start()
        originals = [await crashing.top_up(10_000) for _ in FAILPOINTS]
        assert all(p.state == payment_pb2.PAYMENT_STATE_SETTLED for p in originals)
        wallet = bearer(await crashing.identity.client_token(crashing.partner, ("payments:write",)))

        async def refund(original: payment_pb2.Payment, amount: int) -> payment_pb2.Payment:
            request = payment_pb2.RefundPaymentRequest(
                request_id=uuid.uuid4().hex, name=original.name, amount=money(amount), reason="CUST"
            )
            return (await mesh.payments.RefundPayment(request, metadata=wallet, timeout=5)).refund

        payment.stop()
        for index, (original, failpoint) in enumerate(zip(originals, FAILPOINTS, strict=True)):
            await payment.start(OBM_PAYMENT_FAILPOINT=failpoint, OBM_RECOVERY_INTERVAL_SECONDS="0")
            with pytest.raises(grpc.aio.AioRpcError):
                await refund(original, 1_000 + index)
            assert await payment.wait_exit() == 137, failpoint
        await payment.start()
        expected = 2 * len(FAILPOINTS)
        everything = await _wait_all_final(mesh, expected)
        refunds = [p for p in everything if p.type == payment_pb2.PAYMENT_TYPE_REFUND]
        assert len(refunds) == len(FAILPOINTS)
        refunded = 0
        for r in refunds:
            hold, obligation = await mesh.hold_state(r.name), await mesh.obligation_state(r.name)
            if r.state == payment_pb2.PAYMENT_STATE_SETTLED:
                assert (hold, obligation) == ("POSTED", "COMMITTED"), r.name
                refunded += r.amount.minor_units
            else:
                assert hold in ("", "VOIDED") and obligation in ("", "RELEASED"), (r.name, hold, obligation)
        # Every refund settled: those the saga had passed the post for (never rolled back), and
        # those caught before it, carried forward by recovery (the peers were up throughout).
        assert {r.amount.minor_units: r.state for r in refunds} == {
            1_000 + index: payment_pb2.PAYMENT_STATE_SETTLED for index in range(len(FAILPOINTS))
        }
        # A retry of any refund now answers the refund as it ended, and the originals show them.
        for original in originals:
            shown = (
                await mesh.payments.GetPayment(
                    payment_pb2.GetPaymentRequest(name=original.name), metadata=mesh.partner()
                )
            ).payment
            assert len(shown.refunds) == 1
        paid = 10_000 * len(FAILPOINTS)
        admin = account_admin_pb2_grpc.AccountAdminServiceStub(mesh.channels["account"])
        totals = await admin.GetLedgerTotals(account_admin_pb2.GetLedgerTotalsRequest(), metadata=mesh.operator())
        (eur,) = [t for t in totals.totals if t.currency_code == "EUR"]
        assert eur.balanced and eur.net.minor_units == 0
        assert eur.pending_debits.minor_units == eur.pending_credits.minor_units == 0
        assert eur.posted_debits.minor_units == FUNDS + paid + refunded
        assert await mesh.position("bank") == (-(paid - refunded), 0)
        assert await mesh.position("wallet") == (paid - refunded, 0)
        assert await mesh.balance("alice") == (FUNDS - paid + refunded,) * 2


async def test_a_standing_order_of_twelve_executions_makes_exactly_twelve_payments_through_crashes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A daily order on the sandbox's fast clock (a day a second): the payment service dies
    right after the first execution made its payment (before the order advanced), and is
    SIGKILLed again in the middle of the run; every restart catches up. Exactly twelve payments,
    numbered 1 to 12, all settled, and the money moved twelve times."""
    async with crash_mesh(tmp_path, "true") as crashing:
        mesh, payment = crashing.mesh, crashing.payment
        anchor = dt.datetime.now(dt.UTC)
        fast = {
            "OBM_SCHEDULE_TIME_SCALE": "86400",
            "OBM_SCHEDULE_TIME_ANCHOR": anchor.isoformat(),
            "OBM_SCHEDULE_INTERVAL_SECONDS": "0.2",
            "OBM_SCHEDULE_LEASE_SECONDS": "2",  # real seconds: a dead replica's claim lapses soon
            "OBM_SCHEDULE_CATCH_UP_SECONDS": str(60 * 86400),  # scaled: nothing counts as missed
        }
        await payment.start(**fast, OBM_PAYMENT_FAILPOINT="after_execution_made")
        first = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
        request = payment_pb2.CreateStandingOrderRequest(
            request_id=uuid.uuid4().hex,
            debtor_account=f"accounts/{mesh.accounts['alice']}",
            creditor_wallet=f"partners/{crashing.partner.partner_id}",
            amount=money(100),
            type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
            frequency=payment_pb2.STANDING_ORDER_FREQUENCY_DAILY,
            execution_count=12,
        )
        request.first_execution_time.FromDatetime(first)
        order = (await mesh.payments.CreateStandingOrder(request, metadata=mesh.partner(), timeout=5)).standing_order
        assert await payment.wait_exit() == 137  # died with execution 1 made, the order not advanced
        await payment.start(**fast)

        async def executions() -> list[payment_pb2.Payment]:
            return sorted(
                (p for p in await _all_payments(mesh) if p.standing_order == order.name),
                key=lambda p: p.execution_number,
            )

        deadline = time.monotonic() + 30
        while len(await executions()) < 6:
            assert time.monotonic() < deadline, "the order does not execute"
            await asyncio.sleep(0.2)
        payment.kill()
        await payment.start(**fast)
        deadline = time.monotonic() + 60
        while True:
            shown = (
                await mesh.payments.GetStandingOrder(
                    payment_pb2.GetStandingOrderRequest(name=order.name), metadata=mesh.partner(), timeout=5
                )
            ).standing_order
            if shown.state == payment_pb2.STANDING_ORDER_STATE_COMPLETED:
                break
            assert time.monotonic() < deadline, f"{shown.executions_done} of 12 after a minute"
            await asyncio.sleep(0.3)
        await _wait_all_final(mesh, 12)
        made = await executions()
        assert [p.execution_number for p in made] == list(range(1, 13))
        assert {p.state for p in made} == {payment_pb2.PAYMENT_STATE_SETTLED}
        assert shown.executions_done == 12
        assert await mesh.position("wallet") == (1_200, 0)
        assert await mesh.balance("alice") == (FUNDS - 1_200,) * 2
