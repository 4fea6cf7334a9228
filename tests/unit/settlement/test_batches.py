"""Batches of reservations and commits on the pure rules: a batch gives, item by item, what
the same items give one by one (Hypothesis against the reference model), and a batch's saved
answer reads back as it was."""

from __future__ import annotations

import copy
import datetime as dt

from hypothesis import given, settings

from meshlib.errors import InvalidArgument, MeshError
from meshlib.grpc_errors import encode_item_reason
from openbank.common.v1 import error_reason_pb2
from services.settlement import converters
from services.settlement.domain.batches import ItemResult, Reservation, apply_commits, apply_reservations
from services.settlement.domain.obligations import Obligation, ObligationState, Position
from services.settlement.domain.participants import NetDebitCap, Participant, ParticipantStatus, ParticipantType
from services.settlement.service_common import BATCH_CODEC, OBLIGATION_CODEC, BatchAnswer
from tests.unit.settlement.scenarios import (
    CAPS,
    CURRENCY,
    NOW,
    OK,
    BatchStep,
    CommitBatch,
    PureBook,
    ReserveBatch,
    batch_steps,
    payment_id,
)

PARTICIPANTS = {
    str(i): Participant(
        str(i),
        ParticipantType.WALLET,
        f"partner-{i}",
        f"accounts/s{i}",
        ParticipantStatus.ACTIVE,
        NOW,
        NOW,
        {CURRENCY: NetDebitCap(CURRENCY, cap)},
    )
    for i, cap in enumerate(CAPS)
}


def _as_batch(book: PureBook, step: ReserveBatch | CommitBatch) -> list[str]:
    """Apply ``step`` to ``book`` as the service would, through the batch rules; the outcomes."""
    positions = {(str(i), CURRENCY): position for i, position in book.positions.items()}
    if isinstance(step, ReserveBatch):
        # The service refuses payer == payee before the rules, as ReserveObligation does.
        reservations: list[Reservation | Obligation | MeshError] = [
            InvalidArgument.field("payee", "must differ from payer")
            if r.payer == r.payee
            else Reservation(payment_id(r.payment), str(r.payer), str(r.payee), CURRENCY, r.amount)
            for r in step.items
        ]
        outcome = apply_reservations(reservations, book.obligations, PARTICIPANTS, positions, NOW)
    else:
        ids = [payment_id(c.payment) for c in step.items]
        # The service reads the open window only when an item has something to commit.
        to_commit = any((o := book.obligations.get(i)) is not None and o.state is ObligationState.RESERVED for i in ids)
        windows = {CURRENCY: book._open().id} if to_commit else {}
        outcome = apply_commits(list(ids), book.obligations, positions, windows, NOW)
    for obligation in outcome.obligations:
        book.obligations[obligation.id] = obligation
    for (participant, _), position in outcome.positions.items():
        book.positions[int(participant)] = position
    assert [r.index for r in outcome.results] == list(range(len(step.items)))
    return [OK if r.obligation is not None else r.error_reason for r in outcome.results]  # type: ignore[misc]


@settings(max_examples=400, deadline=None)
@given(batch_steps)
def test_a_batch_gives_what_its_items_give_one_by_one(steps: list[BatchStep]) -> None:
    batched = PureBook()
    for step in steps:
        if not isinstance(step, ReserveBatch | CommitBatch):
            batched.apply(step)
            continue
        one_by_one = copy.deepcopy(batched)
        expected = [one_by_one.apply(item) for item in step.items]
        assert _as_batch(batched, step) == expected
        assert batched.positions == one_by_one.positions
        assert batched.obligations == one_by_one.obligations
        assert batched.windows == one_by_one.windows


def test_an_accepted_item_moves_the_positions_the_next_item_sees() -> None:
    positions = {("0", CURRENCY): Position("0", CURRENCY), ("1", CURRENCY): Position("1", CURRENCY)}
    items: list[Reservation | Obligation | MeshError] = [
        Reservation("a", "0", "1", CURRENCY, 300),
        Reservation("b", "0", "1", CURRENCY, 300),  # 600 > 500
        Reservation("c", "0", "1", CURRENCY, 200),
    ]
    outcome = apply_reservations(items, {}, PARTICIPANTS, positions, NOW)
    assert [r.error_reason for r in outcome.results] == [None, "NET_DEBIT_CAP_EXCEEDED", None]
    assert outcome.answered == [0, 2] and [o.id for o in outcome.obligations] == ["a", "c"]
    assert outcome.positions == {("0", CURRENCY): Position("0", CURRENCY, 0, 500, NOW)}
    assert positions[("1", CURRENCY)] == Position("1", CURRENCY)  # a payee's position is not changed


def test_answered_items_pass_through_unchanged() -> None:
    replayed = Obligation("x", "0", "1", CURRENCY, 5, ObligationState.COMMITTED, NOW, NOW, "w")
    refused = InvalidArgument.field("amount", "must be positive")
    outcome = apply_commits([replayed, refused], {}, {}, {}, NOW)
    assert outcome.results == [ItemResult(0, replayed), ItemResult(1, None, "FIELD_INVALID", refused.message)]
    assert outcome.answered == [] and outcome.obligations == [] and outcome.positions == {}


def test_a_batch_answer_reads_back_as_it_was_saved() -> None:
    later = NOW + dt.timedelta(microseconds=7)
    first = Obligation("p1", "0", "1", CURRENCY, 5, ObligationState.RESERVED, NOW, later)
    second = Obligation("p2", "1", "0", CURRENCY, 9, ObligationState.COMMITTED, NOW, later, "w1")
    answer = BatchAnswer(
        [ItemResult(0, first), ItemResult(1, None, "NET_DEBIT_CAP_EXCEEDED", 'the "cap"'), ItemResult(2, second)],
        # An item's saved answer is embedded as it was saved; the others are encoded.
        snapshots={2: OBLIGATION_CODEC.encode(second)},
    )
    assert BATCH_CODEC.decode(BATCH_CODEC.encode(answer)).results == answer.results


def test_a_refused_item_never_looks_like_a_success() -> None:
    for reason in (
        "NET_DEBIT_CAP_EXCEEDED",
        "PARTICIPANT_NOT_ACTIVE",
        "OBLIGATION_EXISTS_WITH_DIFFERENT_FIELDS",
        "OBLIGATION_ALREADY_RELEASED",
        "RESOURCE_NOT_FOUND",
        "FIELD_INVALID",
        "REQUEST_ID_REUSED",
    ):
        assert encode_item_reason(reason) == error_reason_pb2.ErrorReason.Value(f"ERROR_REASON_{reason}")
    # A reason the contract lacks is an internal error, never UNSPECIFIED (which means success).
    assert encode_item_reason("SOMETHING_NEW") == error_reason_pb2.ERROR_REASON_INTERNAL_ERROR
    result = converters.batch_result(ItemResult(3, None, "SOMETHING_NEW", "odd"))
    assert (result.index, result.HasField("obligation"), result.error_message) == (3, False, "odd")
