"""Reconciliation of a window against the account ledger (pure rules).

Every committed obligation of the window must have posted ledger transfers, referencing its
payment (``payments/{id}``), that move exactly its amount into the payee's settlement
account (or, when the payee's account is not involved, out of the payer's). Every posted
payment transfer on a participant's settlement account created while the window was open
must belong to a committed obligation (in this window or another). The window's nets must
sum to zero.

Settlement (:mod:`~services.settlement.domain.settlement_legs`): the transfers referencing
the window (``settlementWindows/{id}``) of a SETTLED window must take exactly each
participant's net out of its settlement account (a negative net: into it), the bank's
account included; a window not settled must have none (a settle interrupted after its
ledger post shows here until it is run again). Amounts keep their sign throughout: money
that went the wrong way is a difference, never the same amount.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meshlib.money import Amount
from services.settlement.domain.obligations import Obligation, ObligationState
from services.settlement.domain.participants import Participant
from services.settlement.domain.reports import window_nets
from services.settlement.domain.settlement_legs import expected_out, moved_out
from services.settlement.domain.windows import SettlementWindow, WindowState

PAYMENT_PREFIX = "payments/"


class DifferenceKind(enum.Enum):
    """What is wrong between settlement and ledger."""

    MISSING_LEDGER_TRANSFER = "MISSING_LEDGER_TRANSFER"
    MISSING_OBLIGATION = "MISSING_OBLIGATION"
    AMOUNT_MISMATCH = "AMOUNT_MISMATCH"
    # Transfers reference the payment but touch neither participant's settlement account.
    WRONG_ACCOUNTS = "WRONG_ACCOUNTS"
    NET_NOT_ZERO = "NET_NOT_ZERO"
    STALE_RESERVATION = "STALE_RESERVATION"
    # A settled window's transfers moved a settlement account by other than its net.
    SETTLEMENT_MISMATCH = "SETTLEMENT_MISMATCH"
    # Settlement transfers on the ledger for a window that is not SETTLED.
    SETTLEMENT_NOT_RECORDED = "SETTLEMENT_NOT_RECORDED"


@dataclass(frozen=True)
class LedgerTransfer:
    """A ledger transfer as reconciliation sees it."""

    name: str
    debit_account: str
    credit_account: str
    amount: Amount
    posted: bool
    reference: str
    created_at: dt.datetime | None = None

    @property
    def payment_id(self) -> str | None:
        """The payment it references, None when its reference is not a payment name."""
        if self.reference.startswith(PAYMENT_PREFIX) and len(self.reference) > len(PAYMENT_PREFIX):
            return self.reference[len(PAYMENT_PREFIX) :]
        return None


@dataclass(frozen=True)
class Difference:
    """One disagreement between settlement and the ledger."""

    kind: DifferenceKind
    detail: str
    obligation_id: str | None = None
    payment_id: str | None = None
    expected: Amount | None = None
    actual: Amount | None = None
    participant_id: str | None = None
    # The kind of the obligation concerned (PAYMENT, LOSS_SHARE), if one is.
    obligation_kind: str | None = None


@dataclass(frozen=True)
class KindCheck:
    """A window's committed obligations of one kind against what the ledger moved for them."""

    kind: str
    currency: str
    count: int
    obligations_minor: int
    ledger_minor: int


@dataclass(frozen=True)
class ReconciliationReport:
    """The outcome of reconciling one window."""

    window_id: str
    differences: tuple[Difference, ...]
    checked_at: dt.datetime
    kinds: tuple[KindCheck, ...] = ()

    @property
    def clean(self) -> bool:
        """True when settlement and ledger agree."""
        return not self.differences


def ledger_amount(
    obligation: Obligation, transfers: Iterable[LedgerTransfer], participants: Mapping[str, Participant]
) -> Amount | None:
    """Net movement of the obligation's posted transfers into the payee's settlement account,
    or out of the payer's when the payee's account is not involved; None when neither is."""
    posted = [t for t in transfers if t.posted]
    payee = participants.get(obligation.payee_id)
    payer = participants.get(obligation.payer_id)
    for participant, sign in ((payee, 1), (payer, -1)):
        if participant is None:
            continue
        account = participant.settlement_account
        touching = [t for t in posted if account in (t.debit_account, t.credit_account)]
        if not touching:
            continue
        other = [t for t in touching if t.amount.currency != obligation.currency]
        if other:
            return other[0].amount
        total = sum((t.amount.minor_units if t.credit_account == account else -t.amount.minor_units) for t in touching)
        return Amount(obligation.currency, sign * total)
    return None


def reconcile(
    window_id: str,
    obligations: Iterable[Obligation],
    participants: Mapping[str, Participant],
    transfers_by_payment: Mapping[str, list[LedgerTransfer]],
    account_transfers: Iterable[LedgerTransfer],
    known_obligations: Mapping[str, Obligation],
    now: dt.datetime,
    *,
    window: SettlementWindow | None = None,
    settlement_transfers: Iterable[LedgerTransfer] = (),
) -> ReconciliationReport:
    """Every difference between the window's committed obligations and the ledger.

    ``transfers_by_payment`` holds the ledger transfers of each obligation's payment;
    ``account_transfers`` the transfers on the participants' settlement accounts created
    while the window was open; ``known_obligations`` the obligations (any window, any state)
    of the payments those transfers reference. With ``window``, its settlement is checked
    too against ``settlement_transfers``, the ledger transfers referencing the window.
    """
    in_window = [o for o in obligations if o.state is ObligationState.COMMITTED and o.window_id == window_id]
    differences: list[Difference] = []
    kinds: dict[str, list[int]] = {}
    for obligation in in_window:
        expected = Amount(obligation.currency, obligation.amount_minor)
        check = kinds.setdefault(obligation.kind, [0, 0, 0])
        check[0] += 1
        check[1] += obligation.amount_minor
        transfers = [t for t in transfers_by_payment.get(obligation.id, []) if t.posted]
        if not transfers:
            differences.append(
                Difference(
                    DifferenceKind.MISSING_LEDGER_TRANSFER,
                    "no posted ledger transfer references the payment",
                    obligation.id,
                    obligation.id,
                    expected=expected,
                    obligation_kind=obligation.kind,
                )
            )
            continue
        actual = ledger_amount(obligation, transfers, participants)
        if actual is not None and actual.currency == obligation.currency:
            check[2] += actual.minor_units
        if actual is None:
            differences.append(
                Difference(
                    DifferenceKind.WRONG_ACCOUNTS,
                    "the payment's transfers touch neither participant's settlement account",
                    obligation.id,
                    obligation.id,
                    expected=expected,
                    obligation_kind=obligation.kind,
                )
            )
        elif actual != expected:
            differences.append(
                Difference(
                    DifferenceKind.AMOUNT_MISMATCH,
                    "the ledger moved a different amount for the payment",
                    obligation.id,
                    obligation.id,
                    expected=expected,
                    actual=actual,
                    obligation_kind=obligation.kind,
                )
            )
    window_ids = {o.id for o in in_window}
    reported: set[str] = set()
    for transfer in account_transfers:
        payment_id = transfer.payment_id
        if not transfer.posted or payment_id is None or payment_id in window_ids or payment_id in reported:
            continue
        known = known_obligations.get(payment_id)
        if known is not None and known.state is ObligationState.COMMITTED:
            continue  # committed in a neighbouring window; that window reconciles it
        reported.add(payment_id)
        if known is not None and known.state is ObligationState.RESERVED:
            differences.append(
                Difference(
                    DifferenceKind.STALE_RESERVATION,
                    "the payment's ledger transfer is posted but its obligation is still reserved",
                    payment_id,
                    payment_id,
                    expected=Amount(known.currency, known.amount_minor),
                    actual=transfer.amount,
                    obligation_kind=known.kind,
                )
            )
        else:
            detail = (
                "the payment moved money on the ledger but its obligation was released"
                if known
                else ("the payment moved money on a settlement account but has no obligation")
            )
            differences.append(
                Difference(
                    DifferenceKind.MISSING_OBLIGATION,
                    detail,
                    payment_id if known else None,
                    payment_id,
                    actual=transfer.amount,
                )
            )
    net_sum = sum(window_nets(in_window).values())
    if net_sum != 0:
        currency = in_window[0].currency if in_window else ""
        differences.append(
            Difference(
                DifferenceKind.NET_NOT_ZERO,
                "the participants' nets do not sum to zero",
                expected=Amount(currency, 0),
                actual=Amount(currency, net_sum),
            )
        )
    if window is not None:
        differences.extend(settlement_differences(window, in_window, participants, settlement_transfers))
    currency = in_window[0].currency if in_window else ""
    checks = tuple(KindCheck(kind, currency, *kinds[kind]) for kind in sorted(kinds))
    return ReconciliationReport(window_id, tuple(differences), now, checks)


def settlement_differences(
    window: SettlementWindow,
    obligations: Iterable[Obligation],
    participants: Mapping[str, Participant],
    transfers: Iterable[LedgerTransfer],
) -> list[Difference]:
    """What disagrees between the window's settlement and the ledger transfers referencing it.

    Not SETTLED: any posted one is SETTLEMENT_NOT_RECORDED. SETTLED: per settlement account,
    what the posted transfers took out of it (debits minus credits, sign kept) must be the
    net of its participants in the window (positive: paid out); each account that differs is
    a SETTLEMENT_MISMATCH, as is a transfer in another currency.
    """
    posted = [t for t in transfers if t.posted]
    if window.state is not WindowState.SETTLED:
        if not posted:
            return []
        return [
            Difference(
                DifferenceKind.SETTLEMENT_NOT_RECORDED,
                f"{len(posted)} settlement transfer(s) of the window are posted but the window is not settled: "
                "settle it again (nothing is posted twice)",
            )
        ]
    differences: list[Difference] = []
    for transfer in posted:
        if transfer.amount.currency != window.currency:
            differences.append(
                Difference(
                    DifferenceKind.SETTLEMENT_MISMATCH,
                    f"settlement transfer {transfer.name} is in another currency",
                    actual=transfer.amount,
                )
            )
    committed = [o for o in obligations if o.state is ObligationState.COMMITTED and o.window_id == window.id]
    nets = window_nets(committed)
    expected = expected_out(nets, participants)
    actual = moved_out(
        (t.debit_account, t.credit_account, t.amount.minor_units)
        for t in posted
        if t.amount.currency == window.currency
    )
    owners: dict[str, str] = {}
    for participant in sorted(participants.values(), key=lambda p: p.id, reverse=True):
        owners[participant.settlement_account] = participant.id  # the smallest id wins a shared account
    for account in sorted(set(expected) | set(actual)):
        want, got = expected.get(account, 0), actual.get(account, 0)
        if want == got:
            continue
        differences.append(
            Difference(
                DifferenceKind.SETTLEMENT_MISMATCH,
                f"settling the window moved {account} by another amount than its net",
                expected=Amount(window.currency, want),
                actual=Amount(window.currency, got),
                participant_id=owners.get(account),
            )
        )
    return differences
