"""Batches of reservations and commits, applied in memory item by item in request order.

Each item follows exactly the rules of its single call (reserve / commit an obligation): an
accepted item changes the positions that the items after it see, a refused item changes
nothing and stops nothing. The service layer loads what a batch needs in a few set-based
queries, runs these functions over it, and writes what they changed in a few statements.

An item arrives either as work to do (a :class:`Reservation`, or the id of the obligation to
commit) or already answered: the saved answer of a replayed request_id (an
:class:`Obligation`) or the error it was refused with before the rules (a ``MeshError``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field

from meshlib.errors import MeshError, NotFound
from services.settlement.domain.obligations import Obligation, ObligationState, Position
from services.settlement.domain.participants import Participant, parties

# A position by (participant id, currency).
PositionKey = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one reservation item asks for: payment ``payment_id`` from payer to payee."""

    payment_id: str
    payer_id: str
    payee_id: str
    currency: str
    amount_minor: int
    kind: str = "PAYMENT"


@dataclass(frozen=True, slots=True)
class ItemResult:
    """The outcome of one item: the obligation, or the reason it was refused."""

    index: int
    obligation: Obligation | None = None
    error_reason: str | None = None
    error_message: str = ""

    @classmethod
    def refused(cls, index: int, error: MeshError) -> ItemResult:
        """A refused item's result."""
        return cls(index, None, error.reason, error.message)


@dataclass
class BatchOutcome:
    """What applying a batch decided and changed."""

    # One per item, in request order.
    results: list[ItemResult] = field(default_factory=list)
    # Items that succeeded by the rules just now (not replays): their answers are to be saved.
    answered: list[int] = field(default_factory=list)
    # Obligations created (reservations) or changed (commits), to write.
    obligations: list[Obligation] = field(default_factory=list)
    # The positions the accepted items changed, in their final state.
    positions: dict[PositionKey, Position] = field(default_factory=dict)


def apply_reservations(
    items: Sequence[Reservation | Obligation | MeshError],
    existing: Mapping[str, Obligation],
    participants: Mapping[str, Participant],
    positions: MutableMapping[PositionKey, Position],
    now: dt.datetime,
) -> BatchOutcome:
    """Reserve each item in order, as a single reservation would.

    ``existing`` holds the obligations already stored for the items' payments, ``participants``
    the items' parties, ``positions`` (updated in place) at least the payer position of every
    item that reaches the cap check: a new payment between two known, active participants.
    """
    outcome = BatchOutcome()
    for index, item in enumerate(items):
        if not isinstance(item, Reservation):
            outcome.results.append(_answered(index, item))
            continue
        try:
            found = existing.get(item.payment_id)
            if found is not None:
                obligation = found.reserved_again(
                    item.payer_id, item.payee_id, item.currency, item.amount_minor, item.kind
                )
            else:
                payer, _ = parties(participants, item.payer_id, item.payee_id)
                key = (item.payer_id, item.currency)
                reserved = positions[key].reserve(item.amount_minor, payer.cap_for(item.currency), now)
                obligation = Obligation.reserved(
                    item.payment_id, item.payer_id, item.payee_id, item.currency, item.amount_minor, now, item.kind
                )
                positions[key] = outcome.positions[key] = reserved
                outcome.obligations.append(obligation)
        except MeshError as error:
            outcome.results.append(ItemResult.refused(index, error))
            continue
        outcome.results.append(ItemResult(index, obligation))
        outcome.answered.append(index)
    return outcome


def apply_commits(
    items: Sequence[str | Obligation | MeshError],
    existing: Mapping[str, Obligation],
    positions: MutableMapping[PositionKey, Position],
    windows: Mapping[str, str],
    now: dt.datetime,
) -> BatchOutcome:
    """Commit each item (an obligation id) in order, as a single commit would.

    ``existing`` holds the items' stored obligations (locked), ``positions`` (updated in
    place) the payer and payee positions of every RESERVED one, ``windows`` the open window
    id of each of their currencies. A COMMITTED obligation is answered as it is.
    """
    outcome = BatchOutcome()
    for index, item in enumerate(items):
        if not isinstance(item, str):
            outcome.results.append(_answered(index, item))
            continue
        try:
            obligation = existing.get(item)
            if obligation is None:
                raise NotFound("obligation not found")
            if obligation.state is ObligationState.RELEASED:
                obligation.commit("", now)  # raises OBLIGATION_ALREADY_RELEASED
            if obligation.state is ObligationState.RESERVED:
                payer = (obligation.payer_id, obligation.currency)
                payee = (obligation.payee_id, obligation.currency)
                committed, positions[payer], positions[payee] = obligation.commit_moving(
                    positions[payer], positions[payee], windows[obligation.currency], now
                )
                outcome.positions[payer], outcome.positions[payee] = positions[payer], positions[payee]
                outcome.obligations.append(committed)
                obligation = committed
        except MeshError as error:
            outcome.results.append(ItemResult.refused(index, error))
            continue
        outcome.results.append(ItemResult(index, obligation))
        outcome.answered.append(index)
    return outcome


def _answered(index: int, answer: Obligation | MeshError) -> ItemResult:
    if isinstance(answer, MeshError):
        return ItemResult.refused(index, answer)
    return ItemResult(index, answer)
