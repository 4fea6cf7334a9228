"""Settlement's domain rules, without a database or gRPC."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from meshlib.errors import FailedPrecondition
from meshlib.money import Amount
from services.settlement.domain.obligations import Obligation, ObligationState, Position
from services.settlement.domain.participants import NetDebitCap, Participant, ParticipantStatus, ParticipantType
from services.settlement.domain.reconciliation import DifferenceKind, LedgerTransfer, ledger_amount, reconcile
from services.settlement.domain.reports import build_report, report_csv, window_nets
from services.settlement.domain.windows import WindowState, open_window

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
CAP = NetDebitCap("EUR", 500)


def _reason(error: pytest.ExceptionInfo[FailedPrecondition]) -> str:
    return error.value.reason


def _obligation(
    oid: str,
    payer: str,
    payee: str,
    minor: int,
    state: ObligationState = ObligationState.RESERVED,
    window: str | None = None,
) -> Obligation:
    return Obligation(oid, payer, payee, "EUR", minor, state, NOW, NOW, window)


def _participant(pid: str, account: str, partner: str | None = "p") -> Participant:
    return Participant(pid, ParticipantType.WALLET, partner, account, ParticipantStatus.ACTIVE, NOW, NOW)


# --- positions -----------------------------------------------------------------------------


def test_a_reservation_may_reach_the_cap_but_not_pass_it() -> None:
    position = Position("a", "EUR").reserve(300, CAP, NOW)
    at_cap = position.reserve(200, CAP, NOW)
    assert (at_cap.reserved_minor, at_cap.headroom_minor(CAP)) == (500, 0)
    with pytest.raises(FailedPrecondition) as error:
        position.reserve(201, CAP, NOW)
    assert _reason(error) == "NET_DEBIT_CAP_EXCEEDED"


def test_without_a_cap_a_participant_may_only_spend_what_it_is_owed() -> None:
    with pytest.raises(FailedPrecondition):
        Position("a", "EUR").reserve(1, None, NOW)
    owed = Position("a", "EUR").commit_inflow(50, NOW)
    assert owed.reserve(50, None, NOW).reserved_minor == 50


def test_committing_moves_the_reservation_into_the_net_and_keeps_the_exposure() -> None:
    payer = Position("a", "EUR").reserve(200, CAP, NOW)
    committed = payer.commit_outflow(200, NOW)
    assert (committed.reserved_minor, committed.net_minor) == (0, -200)
    assert committed.exposure_minor == payer.exposure_minor == 200
    payee = Position("b", "EUR").commit_inflow(200, NOW)
    assert payee.net_minor == 200 and payee.headroom_minor(CAP) == 700


def test_settling_removes_exactly_the_window_net() -> None:
    position = Position("a", "EUR", net_minor=-300)
    assert position.settle(-300, NOW).net_minor == 0
    assert Position("b", "EUR", net_minor=120).settle(100, NOW).net_minor == 20


def test_a_released_reservation_gives_the_headroom_back() -> None:
    position = Position("a", "EUR").reserve(500, CAP, NOW).release(500, NOW)
    assert position.headroom_minor(CAP) == 500


def test_the_alarm_level_is_a_percentage_of_the_cap() -> None:
    assert NetDebitCap("EUR", 1_000, 80).alarm_level() == 800


# --- obligations ---------------------------------------------------------------------------


def test_an_obligation_commits_or_releases_once() -> None:
    reserved = _obligation("o", "a", "b", 10)
    committed = reserved.commit("w1", NOW)
    assert (committed.state, committed.window_id) == (ObligationState.COMMITTED, "w1")
    assert committed.commit("w2", NOW) is committed  # already committed: unchanged, same window
    with pytest.raises(FailedPrecondition) as error:
        committed.release(NOW)
    assert _reason(error) == "OBLIGATION_ALREADY_COMMITTED"
    released = reserved.release(NOW)
    assert released.state is ObligationState.RELEASED and released.window_id is None
    assert released.release(NOW) is released
    with pytest.raises(FailedPrecondition) as error:
        released.commit("w1", NOW)
    assert _reason(error) == "OBLIGATION_ALREADY_RELEASED"


def test_same_fields_compares_parties_currency_and_amount() -> None:
    obligation = _obligation("o", "a", "b", 10)
    assert obligation.same_fields("a", "b", "EUR", 10)
    assert not obligation.same_fields("a", "b", "EUR", 11)
    assert not obligation.same_fields("b", "a", "EUR", 10)
    assert not obligation.same_fields("a", "b", "GBP", 10)


# --- windows and participants --------------------------------------------------------------


def test_windows_go_open_closed_settled_and_never_back() -> None:
    window = open_window("w1", "EUR", NOW)
    with pytest.raises(FailedPrecondition) as error:
        window.settle(NOW)
    assert _reason(error) == "WINDOW_NOT_CLOSED"
    closed = window.close(NOW)
    with pytest.raises(FailedPrecondition) as error:
        closed.close(NOW)
    assert _reason(error) == "WINDOW_NOT_OPEN"
    settled = closed.settle(NOW, "rtgs-1")
    assert (settled.state, settled.settlement_reference) == (WindowState.SETTLED, "rtgs-1")
    with pytest.raises(FailedPrecondition) as error:
        settled.settle(NOW)
    assert _reason(error) == "WINDOW_ALREADY_SETTLED"


def test_participants_deactivate_and_activate_once_each() -> None:
    participant = _participant("a", "accounts/a")
    inactive = participant.deactivate(NOW)
    with pytest.raises(FailedPrecondition) as error:
        inactive.require_active()
    assert _reason(error) == "PARTICIPANT_NOT_ACTIVE"
    with pytest.raises(FailedPrecondition) as error:
        inactive.deactivate(NOW)
    assert _reason(error) == "INVALID_STATE_TRANSITION"
    assert inactive.activate(NOW).is_active
    with pytest.raises(FailedPrecondition):
        participant.activate(NOW)
    bank = Participant("b", ParticipantType.BANK, None, "accounts/b", ParticipantStatus.ACTIVE, NOW, NOW)
    assert (bank.registration_key, participant.registration_key) == ("bank", "partner:p")
    assert participant.with_cap(CAP, NOW).cap_for("EUR") == CAP and participant.cap_for("EUR") is None


# --- reports -------------------------------------------------------------------------------


def _window_obligations() -> list[Obligation]:
    committed = ObligationState.COMMITTED
    return [
        _obligation("1", "a", "bank", 100, committed, "w1"),
        _obligation("2", "a", "bank", 50, committed, "w1"),
        _obligation("3", "bank", "b", 70, committed, "w1"),
        _obligation("4", "b", "a", 20, committed, "w1"),
        _obligation("5", "a", "b", 999, committed, "w2"),  # another window
        _obligation("6", "a", "b", 999),  # only reserved
    ]


def test_the_report_nets_sum_to_zero_and_keeps_the_bilateral_matrix() -> None:
    report = build_report(open_window("w1", "EUR", NOW).close(NOW), _window_obligations(), NOW)
    nets = {p.participant_id: (p.sent_minor, p.received_minor, p.net_minor) for p in report.net_positions}
    assert nets == {"a": (150, 20, -130), "bank": (70, 150, 80), "b": (20, 70, 50)}
    assert report.nets_sum_minor == 0
    assert [(b.payer_id, b.payee_id, b.amount_minor) for b in report.bilateral_positions] == [
        ("a", "bank", 150),
        ("b", "a", 20),
        ("bank", "b", 70),
    ]
    own = report.for_participant("b")
    assert [p.participant_id for p in own.net_positions] == ["b"]
    assert {(x.payer_id, x.payee_id) for x in own.bilateral_positions} == {("b", "a"), ("bank", "b")}
    assert not report.for_participant(None).net_positions
    assert window_nets(o for o in _window_obligations() if o.window_id == "w1") == {"a": -130, "bank": 80, "b": 50}


def test_an_empty_window_has_an_empty_balanced_report() -> None:
    report = build_report(open_window("w", "EUR", NOW), [], NOW)
    assert report.net_positions == () and report.bilateral_positions == () and report.nets_sum_minor == 0


def test_the_csv_export_has_a_header_then_net_and_bilateral_rows() -> None:
    report = build_report(open_window("w1", "EUR", NOW).close(NOW), _window_obligations(), NOW)
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    nets = [r for r in rows if r["record_type"] == "NET"]
    bilateral = [r for r in rows if r["record_type"] == "BILATERAL"]
    assert len(nets) == 3 and len(bilateral) == 3
    assert sum(int(r["net_minor_units"]) for r in nets) == 0
    assert {r["window_state"] for r in rows} == {"CLOSED"}
    assert bilateral[0]["payer"] == "participants/a" and bilateral[0]["amount_minor_units"] == "150"


# --- reconciliation ------------------------------------------------------------------------


def _ledger(payment: str, debit: str, credit: str, minor: int, currency: str = "EUR") -> LedgerTransfer:
    return LedgerTransfer(
        f"transfers/{payment}", debit, credit, Amount(currency, minor), True, f"payments/{payment}", NOW
    )


def test_the_ledger_amount_is_what_reached_the_payee_or_left_the_payer() -> None:
    people = {"a": _participant("a", "accounts/sa"), "b": _participant("b", "accounts/sb")}
    obligation = _obligation("o", "a", "b", 10, ObligationState.COMMITTED, "w")
    assert ledger_amount(obligation, [_ledger("o", "accounts/cust", "accounts/sb", 10)], people) == Amount("EUR", 10)
    assert ledger_amount(obligation, [_ledger("o", "accounts/sa", "accounts/cust", 10)], people) == Amount("EUR", 10)
    assert ledger_amount(obligation, [_ledger("o", "accounts/x", "accounts/y", 10)], people) is None
    assert ledger_amount(obligation, [_ledger("o", "accounts/sa", "accounts/sb", 10, "GBP")], people) == Amount(
        "GBP", 10
    )


def test_reconcile_reports_mismatches_and_accepts_a_clean_ledger() -> None:
    people = {"a": _participant("a", "accounts/sa"), "b": _participant("b", "accounts/sb", "q")}
    obligations = [
        _obligation("o1", "a", "b", 10, ObligationState.COMMITTED, "w"),
        _obligation("o2", "b", "a", 4, ObligationState.COMMITTED, "w"),
    ]
    clean = {
        "o1": [_ledger("o1", "accounts/sa", "accounts/sb", 10)],
        "o2": [_ledger("o2", "accounts/sb", "accounts/sa", 4)],
    }
    assert reconcile("w", obligations, people, clean, [], {}, NOW).clean
    tampered = {**clean, "o2": [_ledger("o2", "accounts/sb", "accounts/sa", 5)]}
    report = reconcile("w", obligations, people, tampered, [], {}, NOW)
    assert [(d.kind, d.obligation_id, d.expected, d.actual) for d in report.differences] == [
        (DifferenceKind.AMOUNT_MISMATCH, "o2", Amount("EUR", 4), Amount("EUR", 5))
    ]
    unrelated = LedgerTransfer("transfers/fee", "accounts/sa", "accounts/fees", Amount("EUR", 1), True, "fee-1", NOW)
    assert reconcile("w", obligations, people, clean, [unrelated], {}, NOW).clean


def test_a_payment_fee_reconciles_as_its_own_obligation_and_a_fee_leg_the_wrong_way_is_caught() -> None:
    bank = Participant("bank", ParticipantType.BANK, None, "accounts/bank-sa", ParticipantStatus.ACTIVE, NOW, NOW)
    people = {"bank": bank, "w": _participant("w", "accounts/w-sa")}
    # A top-up of 500 (bank -> wallet) and its fee of 6 (wallet -> bank), the fee leg from the
    # wallet's settlement account to the bank's fee income (not a settlement account).
    obligations = [
        _obligation("p1", "bank", "w", 500, ObligationState.COMMITTED, "w1"),
        _obligation("p1-fee", "w", "bank", 6, ObligationState.COMMITTED, "w1"),
    ]
    payment_leg = _ledger("p1", "accounts/alice", "accounts/w-sa", 500)
    fee_leg = _ledger("p1-fee", "accounts/w-sa", "accounts/fee-income", 6)
    clean = {"p1": [payment_leg], "p1-fee": [fee_leg]}
    assert reconcile("w1", obligations, people, clean, [payment_leg, fee_leg], {}, NOW).clean
    assert window_nets(obligations) == {"bank": -494, "w": 494}
    reversed_fee = _ledger("p1-fee", "accounts/fee-income", "accounts/w-sa", 6)
    report = reconcile("w1", obligations, people, {**clean, "p1-fee": [reversed_fee]}, [], {}, NOW)
    assert [(d.kind, d.obligation_id, d.expected, d.actual) for d in report.differences] == [
        (DifferenceKind.AMOUNT_MISMATCH, "p1-fee", Amount("EUR", 6), Amount("EUR", -6))
    ]
    # A fee leg posted without its obligation (the fee moved, settlement never heard of it).
    stray = _ledger("p2-fee", "accounts/w-sa", "accounts/fee-income", 6)
    report = reconcile("w1", obligations, people, clean, [payment_leg, fee_leg, stray], {}, NOW)
    assert [(d.kind, d.payment_id) for d in report.differences] == [(DifferenceKind.MISSING_OBLIGATION, "p2-fee")]
