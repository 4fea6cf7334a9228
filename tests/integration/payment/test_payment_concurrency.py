"""Many concurrent payments from several partners against the same accounts: totals agree exactly."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from openbank.payment.v1 import payment_pb2
from tests.integration.payment.mesh import rpcs_handled, running_mesh, standard_mesh
from tests.support.servers import create_database

PARTNERS = ["partner-1", "partner-2", "partner-3"]


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
async def test_concurrent_payments_from_several_partners_keep_every_total_exact(request, tmp_path, store) -> None:  # type: ignore[no-untyped-def]
    names = ("account", "settlement", "payment")
    if store == "sqlite":
        urls = {n: f"sqlite+aiosqlite:///{tmp_path / f'{n}.db'}" for n in names}
    else:
        server = request.getfixturevalue("postgres_srv")
        urls = {n: await create_database(server, f"t_{n}_{uuid.uuid4().hex[:12]}") for n in names}
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: burst, kind: max_payments_per_window, window_seconds: 60, max_count: 1000}\n")
    async with running_mesh(urls, velocity_rules_file=str(rules)) as running:
        mesh = await standard_mesh(running, funds=40_000, bank_cap=30_000)
        for index, partner in enumerate(PARTNERS[1:], start=2):
            await mesh.open_account(f"wallet-{index}", customer=None)
            await mesh.register(f"wallet-{index}", partner=partner, account_label=f"wallet-{index}", cap=1_000)
            mesh.grant(f"c{index}", partner, ["alice", "bob"])
        rng = random.Random(7)

        async def one(i: int) -> payment_pb2.Payment:
            partner = PARTNERS[i % len(PARTNERS)]
            consent = "c1" if partner == "partner-1" else f"c{PARTNERS.index(partner) + 1}"
            amount = rng.randint(100, 3_000)
            if i % 4 == 0:
                return (
                    await mesh.transfer(amount, consent=consent)
                    if partner == "partner-1"
                    else await mesh.top_up(amount, partner=partner, consent=consent)
                )
            return await mesh.top_up(amount, partner=partner, consent=consent)

        ledger = "openbank.account.v1.LedgerService"
        batches_before = rpcs_handled(ledger, "BatchCreateTransfers")
        singles_before = rpcs_handled(ledger, "CreateTransfer")
        payments = await asyncio.gather(*(one(i) for i in range(45)))
        # The holds of payments in flight leave together: on SQLite the payments' first transactions
        # commit in bursts, so there are batches and fewer calls than payments (on PostgreSQL the
        # consent's lock spaces them out). A lone hold goes as the single rpc.
        hold_batches = rpcs_handled(ledger, "BatchCreateTransfers") - batches_before
        hold_singles = rpcs_handled(ledger, "CreateTransfer") - singles_before
        assert 1 <= hold_batches + hold_singles <= 45
        if store == "sqlite":
            assert hold_batches >= 1 and hold_batches + hold_singles < 45
        states = {p.state for p in payments}
        assert states <= {payment_pb2.PAYMENT_STATE_SETTLED, payment_pb2.PAYMENT_STATE_REJECTED}
        settled = [p for p in payments if p.state == payment_pb2.PAYMENT_STATE_SETTLED]
        rejected = [p for p in payments if p.state == payment_pb2.PAYMENT_STATE_REJECTED]
        assert settled and rejected  # funds (40 000) and the bank's cap (30 000) both bite
        assert {p.status_reason for p in rejected} <= {"INSUFFICIENT_FUNDS", "NET_DEBIT_CAP_EXCEEDED"}
        paid = sum(p.amount.minor_units for p in settled)
        to_bob = sum(p.amount.minor_units for p in settled if p.creditor_account)
        top_ups = {partner: 0 for partner in PARTNERS}
        for p in settled:
            if p.creditor_wallet:
                top_ups[p.creditor_wallet.removeprefix("partners/")] += p.amount.minor_units
        assert await mesh.balance("alice") == (40_000 - paid, 40_000 - paid)
        assert await mesh.balance("bob") == (to_bob, to_bob)
        assert await mesh.position("bank") == (-sum(top_ups.values()), 0)
        assert sum(top_ups.values()) <= 30_000
        for index, partner in enumerate(PARTNERS, start=1):
            assert await mesh.position(f"wallet-{index}") == (top_ups[partner], 0)
        for p in rejected:
            assert await mesh.hold_state(p.name) in ("", "VOIDED")
            assert await mesh.obligation_state(p.name) in ("", "RELEASED")
        assert await mesh.ledger_balanced()
