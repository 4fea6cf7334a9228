"""The ledger's rules over a batch of items, in memory (no database, no gRPC).

One path for one item and for 500: CreateTransfer is a batch of one through
:func:`apply_creates`, PostTransfer and VoidTransfer through :func:`apply_finishes`. Items
apply in order over the locked accounts; an accepted item changes the in-memory accounts
the next items see, a refused one changes nothing, exactly as applying them one by one.
A linked chain (:func:`apply_linked`, :func:`apply_linked_finishes`) applies its items the
same way, then keeps all of them or, when one is refused, none. The caller reads everything
the items need first and writes the :class:`Applied` changes in one go (see :mod:`services.account.transfers`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields

from meshlib.errors import AlreadyExists, FailedPrecondition, FieldViolation, InvalidArgument, MeshError, NotFound
from meshlib.idempotency import SavedAnswer
from services.account.answers import BatchItemResult, finish_fingerprint, transfer_answer, transfer_from_answer
from services.account.domain.ledger import (
    Account,
    Outcome,
    Transfer,
    TransferRequest,
    create_transfer,
    expire_transfer,
)

MAX_BATCH = 500

# post_transfer or void_transfer of the domain.
FinishRule = Callable[[Transfer, Account, Account, dt.datetime], Outcome]


@dataclass(frozen=True, slots=True)
class FinishRequest:
    """One post (or void) of a hold: its own idempotency key and the hold it names."""

    request_id: str
    transfer_id: str


def account_not_found(account_id: str) -> NotFound:
    """An account the call names does not exist."""
    return NotFound("account not found", metadata={"resource_name": f"accounts/{account_id}"})


def transfer_not_found(transfer_id: str) -> NotFound:
    """A transfer the call names does not exist."""
    return NotFound("transfer not found", metadata={"resource_name": f"transfers/{transfer_id}"})


def hold_expired() -> FailedPrecondition:
    """The answer to touching a hold whose timeout elapsed (the touch released it)."""
    return FailedPrecondition("the hold expired and was released", reason="TRANSFER_EXPIRED")


def replay(existing: Transfer, request: TransferRequest) -> Transfer:
    """The existing transfer of a request's id, when the request asks for exactly it."""
    if not existing.matches(request):
        raise AlreadyExists(
            "a transfer with this id exists with different fields",
            reason="TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS",
            metadata={"transfer": f"transfers/{existing.id}"},
        )
    return existing


@dataclass(slots=True)
class Applied:
    """What a batch's items did in memory: each item's answer, and the changes to write in one go."""

    # Per item, in order: its transfer, or the error it was refused with.
    answers: list[Transfer | MeshError] = field(default_factory=list)
    # The items whose transfer this batch created or finished (the rest replayed or were refused).
    made: set[int] = field(default_factory=set)
    # New transfers, and changed ones (finished holds, and elapsed holds released on the way).
    created: list[Outcome] = field(default_factory=list)
    changed: list[Outcome] = field(default_factory=list)
    touched: dict[str, Account] = field(default_factory=dict)
    # New keys of the items' own rpc: (request_id, fingerprint, answer).
    keys: list[tuple[str, str, bytes]] = field(default_factory=list)

    def results(self) -> list[BatchItemResult]:
        """The items' results as a batch answers them."""
        return [BatchItemResult.of(index, answer) for index, answer in enumerate(self.answers)]

    def _touch(self, debit: Account, credit: Account) -> None:
        self.touched[debit.id], self.touched[credit.id] = debit, credit


def apply_creates(
    items: Sequence[TransferRequest | MeshError],
    existing: dict[str, Transfer],
    locked: dict[str, Account],
    now: dt.datetime,
) -> Applied:
    """CreateTransfer's rules for each item, in order, over the locked accounts.

    An item is a request whose shape was checked (:meth:`TransferRequest.validate`), or the
    error its shape failed with. Per item: an existing transfer of its id answers (or
    TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS), then both accounts must exist, then the rule.
    """
    applied = Applied()
    for index, item in enumerate(items):
        try:
            if isinstance(item, MeshError):
                raise item
            found = existing.get(item.transfer_id)
            if found is not None:
                applied.answers.append(replay(found, item))
                continue
            debit = locked.get(item.debit_account_id)
            if debit is None:
                raise account_not_found(item.debit_account_id)
            credit = locked.get(item.credit_account_id)
            if credit is None:
                raise account_not_found(item.credit_account_id)
            outcome = create_transfer(item, debit, credit, now, validated=True)
        except MeshError as error:
            applied.answers.append(error)
            continue
        applied.created.append(outcome)
        applied._touch(debit, credit)
        applied.made.add(index)
        applied.answers.append(outcome.transfer)
    return applied


def leg_refused(index: int, error: MeshError) -> MeshError:
    """A refused leg's error as its whole chain fails with it: the same kind and reason, with
    ErrorInfo metadata ``index``; an invalid field is named ``requests[index].<field>``."""
    metadata = {**error.metadata, "index": str(index)}
    if isinstance(error, InvalidArgument):
        metadata.pop("field", None)
        violations = [FieldViolation(f"requests[{index}].{v.field}", v.description) for v in error.violations]
        return InvalidArgument(violations, reason=error.reason, metadata=metadata)
    # Every leg's error is its own fresh object (the rules raise a new one each time).
    error.metadata = metadata
    return error


_ACCOUNT_FIELDS = tuple(f.name for f in fields(Account))
_TRANSFER_FIELDS = tuple(f.name for f in fields(Transfer))


class _Snapshot:
    """The fields of in-memory accounts (and holds) as they were, to put back when a chain fails.

    Put back in place, not copied: the caller's objects are the ones it goes on to read.
    """

    def __init__(self, accounts: Iterable[Account], transfers: Iterable[Transfer] = ()) -> None:
        self._saved = [(account, [getattr(account, name) for name in _ACCOUNT_FIELDS]) for account in accounts]
        self._saved_transfers = [(t, [getattr(t, name) for name in _TRANSFER_FIELDS]) for t in transfers]

    def restore(self) -> None:
        for account, values in self._saved:
            for name, value in zip(_ACCOUNT_FIELDS, values, strict=True):
                setattr(account, name, value)
        for transfer, values in self._saved_transfers:
            for name, value in zip(_TRANSFER_FIELDS, values, strict=True):
                setattr(transfer, name, value)


def _all_or_none(applied: Applied, snapshot: _Snapshot) -> Applied:
    """A chain's batch result when every item was accepted; else the first refusal, raised, with
    every in-memory object put back (:func:`leg_refused`)."""
    for index, answer in enumerate(applied.answers):
        if isinstance(answer, MeshError):
            snapshot.restore()
            raise leg_refused(index, answer)
    return applied


def apply_linked(
    legs: Sequence[TransferRequest | MeshError],
    existing: dict[str, Transfer],
    locked: dict[str, Account],
    now: dt.datetime,
) -> Applied:
    """A linked chain (TigerBeetle's linked transfers): every leg, or none.

    The legs apply in order exactly as :func:`apply_creates` applies a batch's items (a leg
    sees what the legs before it left). If every leg is accepted (created, or an existing
    transfer of its id with the same fields), the result is that batch's. Otherwise the
    first refused leg's error is raised (:func:`leg_refused`: its index in the metadata) and
    the locked accounts are put back exactly as they were: nothing of the chain remains.
    """
    snapshot = _Snapshot(locked.values())
    return _all_or_none(apply_creates(legs, existing, locked, now), snapshot)


def apply_finishes(
    items: Sequence[FinishRequest | MeshError],
    holds: dict[str, Transfer],
    keys: dict[str, SavedAnswer],
    locked: dict[str, Account],
    rule: FinishRule,
    now: dt.datetime,
) -> Applied:
    """PostTransfer's (or VoidTransfer's: ``rule``) steps for each item, in order.

    Per item: the hold must exist (RESOURCE_NOT_FOUND), then a saved key answers (or
    REQUEST_ID_REUSED), then an elapsed hold is released and refused (TRANSFER_EXPIRED),
    then the rule. A key an earlier item saved is seen by the later ones. ``locked`` holds
    the accounts of every hold whose item's key was not saved before.
    """
    applied = Applied()
    known = dict(keys)
    for index, item in enumerate(items):
        try:
            if isinstance(item, MeshError):
                raise item
            hold = holds.get(item.transfer_id)
            if hold is None:
                raise transfer_not_found(item.transfer_id)
            fingerprint = finish_fingerprint(item.transfer_id)
            key = known.get(item.request_id)
            if key is not None:
                applied.answers.append(transfer_from_answer(key.answer_for(fingerprint)))
                continue
            debit, credit = locked[hold.debit_account_id], locked[hold.credit_account_id]
            if hold.is_due_to_expire(now):
                # Touching an elapsed hold releases it (kept), then refuses.
                applied.changed.append(expire_transfer(hold, debit, credit, now))
                applied._touch(debit, credit)
                raise hold_expired()
            outcome = rule(hold, debit, credit, now)
        except MeshError as error:
            applied.answers.append(error)
            continue
        answer = transfer_answer(outcome.transfer)
        known[item.request_id] = SavedAnswer(item.request_id, fingerprint, answer)
        applied.keys.append((item.request_id, fingerprint, answer))
        applied.changed.append(outcome)
        applied._touch(debit, credit)
        applied.made.add(index)
        applied.answers.append(outcome.transfer)
    return applied


def apply_linked_finishes(
    items: Sequence[FinishRequest | MeshError],
    holds: dict[str, Transfer],
    keys: dict[str, SavedAnswer],
    locked: dict[str, Account],
    rule: FinishRule,
    now: dt.datetime,
) -> Applied:
    """A linked chain of posts (or voids: ``rule``): every hold finished, or none.

    The items apply in order exactly as :func:`apply_finishes` applies a batch's (an item
    whose key already answered counts as accepted). If every item is accepted the result
    is that batch's. Otherwise the first refused item's error is raised with its index
    (:func:`leg_refused`) and the accounts and holds are put back as they were: nothing of
    the chain remains, not even the release of an elapsed hold (the expiry loop's job then).
    """
    snapshot = _Snapshot(locked.values(), holds.values())
    return _all_or_none(apply_finishes(items, holds, keys, locked, rule, now), snapshot)
