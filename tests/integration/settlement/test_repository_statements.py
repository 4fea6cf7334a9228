"""The repositories' prebuilt statements (bindparam placeholders, executed with parameter
dicts) keep the answers of the statements they replaced, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

from services.settlement.domain.participants import NetDebitCap, Participant, ParticipantStatus, ParticipantType
from tests.integration.settlement.support import Layer, key

NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


async def test_positions_are_created_at_zero_and_locked_with_or_without_create(layer: Layer) -> None:
    bank = await layer.bank()
    first = await layer.wallet("w1")
    second = await layer.wallet("w2")
    async with layer.uow(read_only=False) as uow:
        # Registration created the EUR positions; no USD position exists yet.
        created = await uow.positions.lock("USD", [second.id, first.id, second.id])
        assert sorted(created) == sorted([first.id, second.id])
        assert all(
            (p.currency, p.net_minor, p.reserved_minor, p.updated_at) == ("USD", 0, 0, None) for p in created.values()
        )
        # create=False still creates a missing row rather than leaving it out.
        fallback = await uow.positions.lock("GBP", [bank.id, first.id], create=False)
        assert sorted(fallback) == sorted([bank.id, first.id])
        existing = await uow.positions.lock("EUR", [bank.id, first.id], create=False)
        assert sorted(existing) == sorted([bank.id, first.id])
        assert await uow.positions.lock("EUR", []) == {}
        saved = [existing[bank.id].commit_inflow(7, NOW), created[first.id]]
        await uow.positions.save_many(saved)
        await uow.positions.save_many([])
        await uow.commit()
    async with layer.uow() as uow:
        assert await uow.positions.get(bank.id, "EUR") == existing[bank.id].commit_inflow(7, NOW)
        assert await uow.positions.get(bank.id, "JPY") is None


async def test_participants_come_back_with_all_their_caps_or_none(layer: Layer) -> None:
    bank = await layer.bank()
    wallet = await layer.wallet("w1", cap=500)
    await layer.participants.update_cap(key(), wallet.id, NetDebitCap("USD", 900, 70))
    async with layer.uow(read_only=False) as uow:
        await uow.participants.add(
            Participant(
                id="capless",
                type=ParticipantType.WALLET,
                partner_id="none",
                settlement_account="accounts/none",
                status=ParticipantStatus.ACTIVE,
                created_at=NOW,
                updated_at=NOW,
            )
        )
        await uow.commit()
    async with layer.uow() as uow:
        found = await uow.participants.get_many([wallet.id, bank.id, "capless", "unknown", wallet.id])
        one = {p: await uow.participants.get(p) for p in (wallet.id, bank.id, "capless")}
    assert set(found) == {wallet.id, bank.id, "capless"}
    assert found == one
    assert found["capless"].caps == {}
    assert found[wallet.id].caps == {"EUR": NetDebitCap("EUR", 500, 80), "USD": NetDebitCap("USD", 900, 70)}


async def test_commit_skips_window_totals_but_reads_keep_them(layer: Layer) -> None:
    bank = await layer.bank()
    wallet = await layer.wallet("w1")
    await layer.pay("p1", bank.id, wallet.id, 30)
    committed = await layer.positions.commit(key(), "p1")
    await layer.pay("p2", wallet.id, bank.id, 12)
    async with layer.uow() as uow:
        window = await uow.windows.open_window("EUR")
        bare = await uow.windows.open_window("EUR", totals=False)
        assert await uow.windows.open_window("USD", totals=False) is None
    assert window is not None and bare is not None
    assert window.id == bare.id == committed.window_id
    assert (window.obligation_count, window.gross_minor) == (2, 42)
    assert (bare.obligation_count, bare.gross_minor) == (0, 0)
