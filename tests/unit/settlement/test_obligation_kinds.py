"""Obligation kinds: a partner's share of a dispute's loss (LOSS_SHARE) is reserved as its own
kind, totalled apart in the window's report (and its CSV), and checked apart against the ledger
by reconciliation; a replay of a reservation under another kind is refused like other fields."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from meshlib.errors import AlreadyExists
from meshlib.money import Amount
from services.settlement.domain.batches import Reservation, apply_reservations
from services.settlement.domain.obligations import Obligation, ObligationState, Position
from services.settlement.domain.participants import NetDebitCap, Participant, ParticipantStatus, ParticipantType
from services.settlement.domain.reconciliation import DifferenceKind, LedgerTransfer, reconcile
from services.settlement.domain.reports import build_report, report_csv
from services.settlement.domain.windows import open_window

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
COMMITTED = ObligationState.COMMITTED


def _participant(pid: str, kind: ParticipantType = ParticipantType.WALLET) -> Participant:
    partner = None if kind is ParticipantType.BANK else pid
    return Participant(pid, kind, partner, f"accounts/{pid}-sa", ParticipantStatus.ACTIVE, NOW, NOW)


def _obligation(oid: str, payer: str, payee: str, minor: int, kind: str = "PAYMENT") -> Obligation:
    return Obligation(oid, payer, payee, "EUR", minor, COMMITTED, NOW, NOW, "w1", kind)


def _ledger(payment: str, debit: str, credit: str, minor: int) -> LedgerTransfer:
    return LedgerTransfer(f"transfers/{payment}", debit, credit, Amount("EUR", minor), True, f"payments/{payment}", NOW)


# A top-up to the wallet (bank -> acme), a refund of another (acme -> bank), and acme's share
# of a fraud dispute's loss (acme -> bank, out of its settlement account).
WINDOW = [
    _obligation("top-up", "bank", "acme", 1_001),
    _obligation("refund", "acme", "bank", 300),
    _obligation("share", "acme", "bank", 250, "LOSS_SHARE"),
]


def test_a_loss_share_is_totalled_apart_in_the_report_and_its_csv() -> None:
    report = build_report(open_window("w1", "EUR", NOW).close(NOW), WINDOW, NOW)
    assert [(k.kind, k.payer_id, k.payee_id, k.amount_minor, k.count) for k in report.kind_totals] == [
        ("LOSS_SHARE", "acme", "bank", 250, 1),
        ("PAYMENT", "acme", "bank", 300, 1),
        ("PAYMENT", "bank", "acme", 1_001, 1),
    ]
    # The bilateral matrix and the nets are as before: the kinds split what they sum.
    assert [(b.payer_id, b.payee_id, b.amount_minor) for b in report.bilateral_positions] == [
        ("acme", "bank", 550),
        ("bank", "acme", 1_001),
    ]
    assert report.for_participant("acme").kind_totals == report.kind_totals
    assert report.for_participant("other").kind_totals == ()
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    kinds = [(r["kind"], r["payer"], r["amount_minor_units"]) for r in rows if r["record_type"] == "KIND"]
    assert ("LOSS_SHARE", "participants/acme", "250") in kinds and len(kinds) == 3
    assert {r["kind"] for r in rows if r["record_type"] in ("NET", "BILATERAL")} == {""}


def test_reconciliation_checks_each_kind_against_the_ledger_and_names_the_kind_of_a_difference() -> None:
    people = {"bank": _participant("bank", ParticipantType.BANK), "acme": _participant("acme")}
    ledger = {
        "top-up": [_ledger("top-up", "accounts/bank-sa", "accounts/acme-sa", 1_001)],
        "refund": [_ledger("refund", "accounts/acme-sa", "accounts/bank-sa", 300)],
        "share": [_ledger("share", "accounts/acme-sa", "accounts/alice", 250)],
    }
    clean = reconcile("w1", WINDOW, people, ledger, [], {}, NOW)
    assert clean.clean
    assert [(k.kind, k.count, k.obligations_minor, k.ledger_minor) for k in clean.kinds] == [
        ("LOSS_SHARE", 1, 250, 250),
        ("PAYMENT", 2, 1_301, 1_301),
    ]
    short_ledger = {**ledger, "share": [_ledger("share", "accounts/acme-sa", "accounts/alice", 200)]}
    short = reconcile("w1", WINDOW, people, short_ledger, [], {}, NOW)
    assert [(d.kind, d.obligation_id, d.obligation_kind) for d in short.differences] == [
        (DifferenceKind.AMOUNT_MISMATCH, "share", "LOSS_SHARE")
    ]
    assert (short.kinds[0].kind, short.kinds[0].obligations_minor, short.kinds[0].ledger_minor) == (
        "LOSS_SHARE",
        250,
        200,
    )


def test_a_reservation_keeps_its_kind_and_a_replay_under_another_kind_is_refused() -> None:
    share = Obligation.reserved("share", "acme", "bank", "EUR", 250, NOW, "LOSS_SHARE")
    assert share.kind == "LOSS_SHARE" and Obligation.reserved("p", "a", "b", "EUR", 1, NOW).kind == "PAYMENT"
    assert share.reserved_again("acme", "bank", "EUR", 250, "LOSS_SHARE") is share
    with pytest.raises(AlreadyExists):
        share.reserved_again("acme", "bank", "EUR", 250, "PAYMENT")
    # The batch path keeps it too.
    acme = _participant("acme").with_cap(NetDebitCap("EUR", 10_000), NOW)
    people = {"bank": _participant("bank", ParticipantType.BANK), "acme": acme}
    positions = {("acme", "EUR"): Position("acme", "EUR", 0, 0, NOW)}
    outcome = apply_reservations(
        [Reservation("share", "acme", "bank", "EUR", 250, "LOSS_SHARE")], {}, people, positions, NOW
    )
    assert [(o.id, o.kind) for o in outcome.obligations] == [("share", "LOSS_SHARE")]
