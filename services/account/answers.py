"""The ledger's idempotency keys: how a request is fingerprinted, what is saved as its answer
and how a replay reads that answer back.

What a key of scope :data:`LEDGER_SCOPE` saves:

* PostTransfer and VoidTransfer: the transfer (:func:`transfer_answer`). An item of
  BatchPostTransfers saves exactly that under PostTransfer's own key (same method, same
  :func:`finish_fingerprint`), so either rpc replays a post the other made.
* BatchCreateTransfers and BatchPostTransfers: one entry per item (:func:`batch_answer`),
  tagged with an :class:`AnswerKind`. A transfer the batch made itself is not copied into
  the answer (500 of them would be most of it): a replay rebuilds it, see :class:`SavedBatch`.

CreateTransfer saves nothing: a transfer's id is its request_id, so the transfers table is
its key store (kept forever).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, is_dataclass
from typing import TYPE_CHECKING, Any

from meshlib.errors import MeshError
from meshlib.storage import Codec
from services.account.domain.ledger import Transfer, TransferRequest, TransferType

if TYPE_CHECKING:
    from services.account.batches import FinishRequest

LEDGER_SCOPE = "ledger"

# The saved batch answer's layout: {"format": 2, "at": ..., "results": [entry, ...]}. Format 1,
# BatchCreateTransfers' first, was a list of {"index", "transfer", "error_reason",
# "error_message"}; it is still read (answers are kept for 48 hours).
BATCH_ANSWER_FORMAT = 2


def request_fingerprint(**fields: Any) -> str:
    """A stable hash of a command's payload (the idempotency key itself excluded)."""

    def plain(value: Any) -> Any:
        if is_dataclass(value) and not isinstance(value, type):
            return asdict(value)
        return str(value)

    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=plain).encode()).hexdigest()


def finish_fingerprint(transfer_id: str) -> str:
    """The fingerprint of a PostTransfer (or VoidTransfer) key, and of a BatchPostTransfers item.

    The very same one for both: that is what makes an item's request_id one key with the
    single rpc's.
    """
    return request_fingerprint(transfer=transfer_id)


_TYPE_TEXT = {kind: str(kind) for kind in TransferType}


def _plain_transfer_item(item: TransferRequest | MeshError) -> Any:
    """A batch item as :func:`request_fingerprint` sees it (``asdict`` + ``str``), built directly.

    The same JSON as the generic path, so fingerprints saved before stay valid, at a
    fraction of ``dataclasses.asdict``'s cost (which dominated a 500-item batch).
    """
    if isinstance(item, MeshError):
        return str(item)
    return {
        "transfer_id": item.transfer_id,
        "debit_account_id": item.debit_account_id,
        "credit_account_id": item.credit_account_id,
        "amount": {"currency": item.amount.currency, "minor_units": item.amount.minor_units},
        "type": _TYPE_TEXT[item.type],
        "timeout": None if item.timeout is None else str(item.timeout),
        "reference": item.reference,
        "description": item.description,
    }


def batch_create_fingerprint(items: Iterable[TransferRequest | MeshError]) -> str:
    """The fingerprint of a BatchCreateTransfers key (an item that arrived failed counts as its error)."""
    return request_fingerprint(requests=[_plain_transfer_item(item) for item in items])


def batch_post_fingerprint(items: Iterable[FinishRequest | MeshError]) -> str:
    """The fingerprint of a BatchPostTransfers key."""
    return request_fingerprint(
        requests=[str(item) if isinstance(item, MeshError) else [item.request_id, item.transfer_id] for item in items]
    )


def transfer_answer(transfer: Transfer) -> bytes:
    """A transfer as saved for a replay of PostTransfer or VoidTransfer."""
    return json.dumps(transfer.to_dict()).encode()


def transfer_from_answer(saved: bytes) -> Transfer:
    """The inverse of :func:`transfer_answer`."""
    return Transfer.from_dict(json.loads(saved))


class AnswerKind(enum.StrEnum):
    """What one item's entry in a saved batch answer holds (stored as one letter: 500 per answer)."""

    # ``[CREATED, index]``: a transfer this batch created. A replay rebuilds it from the same
    # request (the replay's fingerprint says it is the same) at the answer's time.
    CREATED = "c"
    # ``[FINISHED, index]``: a hold this batch posted. A final state, so a replay answers the
    # transfer row as it is then.
    FINISHED = "f"
    # ``[REPLAYED, index, transfer]``: an older transfer, or an older PostTransfer key's answer,
    # kept in full (that key may be purged before the batch's).
    REPLAYED = "t"
    # ``[REFUSED, index, reason, message]``.
    REFUSED = "e"


_MADE_HERE = (AnswerKind.CREATED, AnswerKind.FINISHED)


@dataclass(frozen=True, slots=True)
class BatchItemResult:
    """The outcome of one item of a batch: a transfer, or why it failed."""

    index: int
    transfer: Transfer | None = None
    error_reason: str | None = None
    error_message: str = ""

    @classmethod
    def of(cls, index: int, answer: Transfer | MeshError) -> BatchItemResult:
        """An item's result from its answer (a refused item keeps only the error's reason and message)."""
        if isinstance(answer, MeshError):
            return cls(index, None, answer.reason, answer.message)
        return cls(index, answer)


@dataclass(frozen=True, slots=True)
class BatchAnswer:
    """A batch's answer: each item's result, the items whose transfer it made itself, and when.

    Read back from a saved answer (``replayed``), a made item's transfer is not in it: its
    result is a placeholder until :meth:`filled` gives it.
    """

    results: list[BatchItemResult]
    made: frozenset[int]
    at: dt.datetime | None
    replayed: bool = False

    def filled(self, made: Callable[[int], Transfer]) -> list[BatchItemResult]:
        """The results, each made item's transfer from ``made(index)`` if this answer was read back."""
        if not self.replayed:
            return self.results
        return [
            BatchItemResult(result.index, made(result.index)) if result.index in self.made else result
            for result in self.results
        ]


def batch_codec(made_kind: AnswerKind) -> Codec[BatchAnswer]:
    """How a batch's answer is saved (its made items as ``made_kind``) and read back."""

    def encode(answer: BatchAnswer) -> bytes:
        entries: list[list[Any]] = []
        for result in answer.results:
            if result.transfer is None:
                entries.append([AnswerKind.REFUSED, result.index, result.error_reason, result.error_message])
            elif result.index in answer.made:
                entries.append([made_kind, result.index])
            else:
                entries.append([AnswerKind.REPLAYED, result.index, result.transfer.to_dict()])
        at = answer.at.isoformat() if answer.at else None
        return json.dumps({"format": BATCH_ANSWER_FORMAT, "at": at, "results": entries}).encode()

    return Codec(encode, read_batch_answer)


def read_batch_answer(saved: bytes) -> BatchAnswer:
    """A saved batch answer read back (either batch's, or format 1)."""
    data = json.loads(saved)
    if isinstance(data, list):  # format 1: every result whole
        return BatchAnswer(
            [
                BatchItemResult(item["index"], Transfer.from_dict(item["transfer"]))
                if item["transfer"]
                else BatchItemResult(item["index"], None, item["error_reason"], item["error_message"])
                for item in data
            ],
            frozenset(),
            None,
            replayed=True,
        )
    results: list[BatchItemResult] = []
    made: set[int] = set()
    for kind, index, *rest in data["results"]:
        if kind in _MADE_HERE:
            made.add(index)
            results.append(BatchItemResult(index))  # filled in by BatchAnswer.filled
        elif kind == AnswerKind.REPLAYED:
            results.append(BatchItemResult(index, Transfer.from_dict(rest[0])))
        else:
            results.append(BatchItemResult(index, None, rest[0], rest[1]))
    return BatchAnswer(results, frozenset(made), dt.datetime.fromisoformat(data["at"]), replayed=True)


# BatchCreateTransfers' and BatchPostTransfers' answers.
CREATED_BATCH = batch_codec(AnswerKind.CREATED)
FINISHED_BATCH = batch_codec(AnswerKind.FINISHED)
