"""Settling a window moves money: its ledger legs, and reconciliation seeing which way money went
(pure rules, no database, no gRPC)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from meshlib.idempotency import validate_request_id
from meshlib.money import Amount
from services.settlement.domain.obligations import Obligation, ObligationState
from services.settlement.domain.participants import Participant, ParticipantStatus, ParticipantType
from services.settlement.domain.reconciliation import DifferenceKind, LedgerTransfer, ledger_amount, reconcile
from services.settlement.domain.reports import window_nets
from services.settlement.domain.settlement_legs import (
    chain_request_id,
    expected_out,
    leg_transfer_id,
    moved_out,
    settlement_legs,
    window_reference,
)
from services.settlement.domain.windows import SettlementWindow, WindowState

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
BANK_ACCOUNT = "accounts/bank"


def _participant(pid: str, account: str, kind: ParticipantType = ParticipantType.WALLET) -> Participant:
    partner = None if kind is ParticipantType.BANK else f"partner-{pid}"
    return Participant(pid, kind, partner, account, ParticipantStatus.ACTIVE, NOW, NOW)


def _people(*wallets: str) -> dict[str, Participant]:
    people = {"bank": _participant("bank", BANK_ACCOUNT, ParticipantType.BANK)}
    people.update({w: _participant(w, f"accounts/s-{w}") for w in wallets})
    return people


def _committed(oid: str, payer: str, payee: str, minor: int, window: str = "w") -> Obligation:
    return Obligation(oid, payer, payee, "EUR", minor, ObligationState.COMMITTED, NOW, NOW, window)


def _window(state: WindowState, window_id: str = "w") -> SettlementWindow:
    return SettlementWindow(window_id, "EUR", state, NOW, NOW, NOW if state is WindowState.SETTLED else None)


def _as_ledger(legs) -> list[LedgerTransfer]:  # type: ignore[no-untyped-def]
    return [
        LedgerTransfer(
            f"transfers/{g.transfer_id}", g.debit_account, g.credit_account, g.amount, True, g.reference, NOW
        )
        for g in legs
    ]


# --- the legs -------------------------------------------------------------------------------


def test_each_net_moves_between_its_settlement_account_and_the_banks_payouts_first() -> None:
    people = _people("w1", "w2", "w3")
    nets = {"bank": -300, "w1": 200, "w2": 150, "w3": -50, "w4": 0}
    people["w4"] = _participant("w4", "accounts/s-w4")
    legs = settlement_legs("win-1", "EUR", nets, people, BANK_ACCOUNT)
    assert [(g.participant_id, g.debit_account, g.credit_account, g.amount.minor_units) for g in legs] == [
        ("w1", "accounts/s-w1", BANK_ACCOUNT, 200),  # owed: paid out of its settlement account
        ("w2", "accounts/s-w2", BANK_ACCOUNT, 150),
        ("w3", BANK_ACCOUNT, "accounts/s-w3", 50),  # owes: pays in
    ]  # the bank's own net is what the legs leave on its account; a zero net has no leg
    assert {g.reference for g in legs} == {"settlementWindows/win-1"} == {window_reference("win-1")}
    assert legs[0].description == "settlement of participants/w1"


def test_ids_derive_from_the_window_and_are_valid_request_ids() -> None:
    window = "0123456789abcdef" * 2
    participant = "fedcba9876543210" * 2
    for derived in (chain_request_id(window), leg_transfer_id(window, participant)):
        assert validate_request_id(derived) == derived and len(derived) <= 64
    assert leg_transfer_id(window, participant) == leg_transfer_id(window, participant)
    assert leg_transfer_id(window, participant) != leg_transfer_id(window, "other")
    assert chain_request_id(window) != chain_request_id("other")


@settings(max_examples=300, deadline=None)
@given(
    flows=st.lists(
        st.tuples(
            st.sampled_from(["bank", "a", "b", "c"]), st.sampled_from(["bank", "a", "b", "c"]), st.integers(1, 900)
        ),
        max_size=12,
    )
)
def test_every_settlement_account_moves_by_exactly_its_net(flows: list[tuple[str, str, int]]) -> None:
    people = _people("a", "b", "c")
    obligations = [
        _committed(f"o{i}", payer, payee, minor) for i, (payer, payee, minor) in enumerate(flows) if payer != payee
    ]
    nets = window_nets(obligations)
    legs = settlement_legs("w", "EUR", nets, people, BANK_ACCOUNT)
    assert all(g.amount.minor_units > 0 and g.debit_account != g.credit_account for g in legs)
    moved = moved_out((g.debit_account, g.credit_account, g.amount.minor_units) for g in legs)
    expected = expected_out(nets, people)
    for account in set(moved) | set(expected):
        assert moved.get(account, 0) == expected.get(account, 0), account
    assert sum(moved.values()) == 0  # the ledger still sums to zero
    # And reconciliation agrees: a settled window with exactly these legs is clean.
    report = reconcile(
        "w",
        obligations,
        people,
        {},
        [],
        {},
        NOW,
        window=_window(WindowState.SETTLED),
        settlement_transfers=_as_ledger(legs),
    )
    assert [d.kind for d in report.differences if d.kind is not DifferenceKind.MISSING_LEDGER_TRANSFER] == []


# --- reconciliation sees the direction of money ---------------------------------------------


def _ledger(payment: str, debit: str, credit: str, minor: int) -> LedgerTransfer:
    return LedgerTransfer(f"transfers/{payment}", debit, credit, Amount("EUR", minor), True, f"payments/{payment}", NOW)


def test_money_out_of_the_payees_settlement_account_is_not_money_into_it() -> None:
    people = {"a": _participant("a", "accounts/sa"), "b": _participant("b", "accounts/sb")}
    obligation = _committed("o", "a", "b", 10)
    reversed_payee = [_ledger("o", "accounts/sb", "accounts/cust", 10)]  # 10 left the payee's account
    assert ledger_amount(obligation, reversed_payee, people) == Amount("EUR", -10)
    report = reconcile("w", [obligation], people, {"o": reversed_payee}, [], {}, NOW)
    assert [(d.kind, d.expected, d.actual) for d in report.differences] == [
        (DifferenceKind.AMOUNT_MISMATCH, Amount("EUR", 10), Amount("EUR", -10))
    ]


def test_money_into_the_payers_settlement_account_is_not_money_out_of_it() -> None:
    people = {"a": _participant("a", "accounts/sa"), "b": _participant("b", "accounts/sb")}
    obligation = _committed("o", "a", "b", 10)
    reversed_payer = [_ledger("o", "accounts/cust", "accounts/sa", 10)]  # 10 reached the payer instead
    assert ledger_amount(obligation, reversed_payer, people) == Amount("EUR", -10)
    report = reconcile("w", [obligation], people, {"o": reversed_payer}, [], {}, NOW)
    assert [(d.kind, d.actual) for d in report.differences] == [(DifferenceKind.AMOUNT_MISMATCH, Amount("EUR", -10))]
    right_way = [_ledger("o", "accounts/sa", "accounts/cust", 10)]
    assert reconcile("w", [obligation], people, {"o": right_way}, [], {}, NOW).clean


def _settled_scenario():  # type: ignore[no-untyped-def]
    people = _people("w1", "w2")
    obligations = [_committed("p1", "bank", "w1", 300), _committed("p2", "w2", "bank", 120)]
    payments = {
        "p1": [_ledger("p1", "accounts/cust", "accounts/s-w1", 300)],
        "p2": [_ledger("p2", "accounts/s-w2", "accounts/cust", 120)],
    }
    legs = settlement_legs("w", "EUR", window_nets(obligations), people, BANK_ACCOUNT)
    return people, obligations, payments, _as_ledger(legs)


def _settlement_check(legs, state: WindowState = WindowState.SETTLED):  # type: ignore[no-untyped-def]
    people, obligations, payments, _ = _settled_scenario()
    report = reconcile(
        "w", obligations, people, payments, [], {}, NOW, window=_window(state), settlement_transfers=legs
    )
    return [(d.kind, d.participant_id, d.expected, d.actual) for d in report.differences]


def test_a_settled_window_reconciles_when_its_legs_moved_each_net() -> None:
    *_, legs = _settled_scenario()
    assert [(t.debit_account, t.credit_account, t.amount.minor_units) for t in legs] == [
        ("accounts/s-w1", BANK_ACCOUNT, 300),
        (BANK_ACCOUNT, "accounts/s-w2", 120),
    ]
    assert _settlement_check(legs) == []
    # A window not settled yet has no legs; a settled one whose nets were all zero needs none.
    assert _settlement_check([], WindowState.CLOSED) == []


def test_a_settlement_leg_the_wrong_way_round_is_a_difference() -> None:
    *_, legs = _settled_scenario()
    turned = replace(legs[0], debit_account=legs[0].credit_account, credit_account=legs[0].debit_account)
    eur = lambda minor: Amount("EUR", minor)  # noqa: E731
    assert _settlement_check([turned, legs[1]]) == [
        (DifferenceKind.SETTLEMENT_MISMATCH, "bank", eur(-180), eur(420)),
        (DifferenceKind.SETTLEMENT_MISMATCH, "w1", eur(300), eur(-300)),
    ]
    # A pay-in turned round: the payer's account paid out instead of in.
    turned_in = replace(legs[1], debit_account=legs[1].credit_account, credit_account=legs[1].debit_account)
    assert (DifferenceKind.SETTLEMENT_MISMATCH, "w2", eur(-120), eur(120)) in _settlement_check([legs[0], turned_in])


def test_settled_without_legs_short_legs_and_legs_of_an_unsettled_window_are_differences() -> None:
    *_, legs = _settled_scenario()
    missing = _settlement_check([])
    assert {(kind, who) for kind, who, _, _ in missing} == {
        (DifferenceKind.SETTLEMENT_MISMATCH, "bank"),
        (DifferenceKind.SETTLEMENT_MISMATCH, "w1"),
        (DifferenceKind.SETTLEMENT_MISMATCH, "w2"),
    }
    short = replace(legs[0], amount=Amount("EUR", 299))
    assert (DifferenceKind.SETTLEMENT_MISMATCH, "w1", Amount("EUR", 300), Amount("EUR", 299)) in _settlement_check(
        [short, legs[1]]
    )
    not_posted = [replace(leg, posted=False) for leg in legs]
    assert _settlement_check(not_posted, WindowState.CLOSED) == []
    [(kind, who, _, _)] = _settlement_check(legs, WindowState.CLOSED)
    assert (kind, who) == (DifferenceKind.SETTLEMENT_NOT_RECORDED, None)
    other_currency = replace(legs[0], amount=Amount("GBP", 300))
    assert DifferenceKind.SETTLEMENT_MISMATCH in {k for k, *_ in _settlement_check([other_currency, legs[1]])}
