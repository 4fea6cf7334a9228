"""The ledger's saved answers: what a batch saves, and that answers saved before still read back.

Answers are kept 48 hours, so a replay after an upgrade reads what the previous code saved.
"""

from __future__ import annotations

import datetime as dt
import json

from meshlib.money import Amount
from services.account.answers import (
    CREATED_BATCH,
    FINISHED_BATCH,
    AnswerKind,
    BatchAnswer,
    BatchItemResult,
    read_batch_answer,
    transfer_answer,
    transfer_from_answer,
)
from services.account.domain.ledger import Transfer, TransferRequest, TransferState, TransferType, new_transfer

AT = dt.datetime(2026, 5, 4, 3, 2, 1, 123456, tzinfo=dt.UTC)
REQUEST = TransferRequest("t-new", "acc-a", "acc-b", Amount("EUR", 700), TransferType.PENDING, dt.timedelta(seconds=30))
MADE = new_transfer(REQUEST, AT)
OLDER = new_transfer(
    TransferRequest("t-old", "acc-b", "acc-a", Amount("EUR", 5), TransferType.SINGLE_PHASE, reference="r"),
    AT - dt.timedelta(days=1),
)


def made(index: int) -> Transfer:
    assert index == 0
    return MADE


RESULTS = [BatchItemResult(0, MADE), BatchItemResult(1, OLDER), BatchItemResult(2, None, "INSUFFICIENT_FUNDS", "no")]


def test_a_batch_saves_what_it_made_by_kind_and_the_rest_whole() -> None:
    for codec, kind in ((CREATED_BATCH, AnswerKind.CREATED), (FINISHED_BATCH, AnswerKind.FINISHED)):
        saved = codec.encode(BatchAnswer(RESULTS, frozenset({0}), AT))
        assert json.loads(saved) == {
            "format": 2,
            "at": AT.isoformat(),
            "results": [[kind.value, 0], ["t", 1, OLDER.to_dict()], ["e", 2, "INSUFFICIENT_FUNDS", "no"]],
        }
        again = codec.decode(saved)
        assert again.replayed and again.made == {0} and again.at == AT
        assert again.filled(made) == RESULTS


def test_a_fresh_answer_is_complete() -> None:
    answer = BatchAnswer(RESULTS, frozenset({0}), AT)
    assert answer.filled(lambda index: 1 / 0) == RESULTS  # type: ignore[arg-type,return-value]


def test_answers_the_previous_code_saved_still_read_back() -> None:
    # BatchCreateTransfers' format 2, BatchPostTransfers' format 1: the same layout, by letter.
    for letter, number in (("c", 2), ("f", 1)):
        saved = json.dumps(
            {
                "format": number,
                "at": AT.isoformat(),
                "results": [[letter, 0], ["t", 1, OLDER.to_dict()], ["e", 2, "INSUFFICIENT_FUNDS", "no"]],
            }
        ).encode()
        assert read_batch_answer(saved).filled(made) == RESULTS
    # BatchCreateTransfers' format 1: every result whole, no time.
    format_1 = [
        {"index": 0, "transfer": OLDER.to_dict(), "error_reason": None, "error_message": ""},
        {"index": 1, "transfer": None, "error_reason": "FIELD_INVALID", "error_message": "bad"},
    ]
    answer = read_batch_answer(json.dumps(format_1).encode())
    assert answer.made == frozenset() and answer.at is None
    assert answer.filled(made) == [BatchItemResult(0, OLDER), BatchItemResult(1, None, "FIELD_INVALID", "bad")]


def test_a_post_answer_is_the_transfer() -> None:
    posted = new_transfer(REQUEST, AT)
    posted.state = TransferState.POSTED
    assert transfer_answer(posted) == json.dumps(posted.to_dict()).encode()
    assert transfer_from_answer(transfer_answer(posted)) == posted
