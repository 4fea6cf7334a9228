"""Service layer for batches of reservations and commits: the payment saga's calls of many
payments in flight, coalesced into one rpc and one transaction each.

Every item means exactly what its single call means (:class:`PositionService` ``reserve`` /
``commit``): same checks, same reasons, applied in request order, each on its own. Idempotency
works at two levels:

- the batch's request_id, saved under "BatchReserveObligations" / "BatchCommitObligations":
  a replayed batch returns its first answer;
- each item's request_id, saved under the single rpc's own method ("ReserveObligation" /
  "CommitObligation") and the same caller scope, with the single rpc's fingerprint: an item
  and a single call with the same request_id share one answer, whichever came first (the
  saga's recovery may replay through the single rpc what it first sent in a batch). As with
  the single rpc, only a success is saved: a refused item is decided afresh when retried.

Set-based, because the point of a batch is the CPU per item: one query for the items' saved
answers, one for their obligations (locked), one for the participants, one lock per currency
for the positions, one read of the open window per currency for commits; then the rules in
memory (:mod:`services.settlement.domain.batches`); then one statement each for the
obligations, the positions and the items' saved answers.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from meshlib.errors import InvalidArgument, MeshError
from meshlib.money import Amount
from meshlib.storage import IdempotencyKey
from services.settlement.audit_records import audit_obligation
from services.settlement.domain.batches import (
    BatchOutcome,
    ItemResult,
    PositionKey,
    Reservation,
    apply_commits,
    apply_reservations,
)
from services.settlement.domain.obligations import Obligation, ObligationState, Position
from services.settlement.position_service import current_open_window, warn_if_near_cap
from services.settlement.service_common import (
    BATCH_CODEC,
    OBLIGATION_CODEC,
    BatchAnswer,
    SettlementTransactions,
    new_id,
)
from services.settlement.unit_of_work import SettlementUnitOfWork

log = logging.getLogger("settlement.batches")

T = TypeVar("T")
W = TypeVar("W")

MAX_BATCH = 500
# The single rpcs' idempotency methods: an item's key is stored under them, shared with the rpc.
RESERVE_METHOD = "ReserveObligation"
COMMIT_METHOD = "CommitObligation"
BATCH_RESERVE_METHOD = "BatchReserveObligations"
BATCH_COMMIT_METHOD = "BatchCommitObligations"


@dataclass(frozen=True, slots=True)
class ReserveItem:
    """One reservation of a batch: its own idempotency key and what it reserves."""

    key: IdempotencyKey
    payment_id: str
    payer_id: str
    payee_id: str
    amount: Amount
    kind: str = "PAYMENT"


@dataclass(frozen=True, slots=True)
class CommitItem:
    """One commit of a batch: its own idempotency key and the obligation."""

    key: IdempotencyKey
    obligation_id: str


def _check_batch(count: int, parsed: Mapping[int, ReserveItem | CommitItem], field: str) -> None:
    """1..MAX_BATCH items, no two for one payment / obligation (``field``) or with one request_id.

    Malformed items (not in ``parsed``) are left out: they fail on their own.
    """
    if count == 0:
        raise InvalidArgument.field("requests", "must hold at least one item")
    if count > MAX_BATCH:
        raise InvalidArgument.field("requests", f"must hold at most {MAX_BATCH} items")
    targets: set[str] = set()
    request_ids: set[str] = set()
    for index, item in parsed.items():
        target = item.payment_id if isinstance(item, ReserveItem) else item.obligation_id
        if target in targets:
            raise InvalidArgument.field(f"requests[{index}].{field}", f"another item has the same {field}")
        if item.key.request_id in request_ids:
            raise InvalidArgument.field(f"requests[{index}].request_id", "another item has the same request_id")
        targets.add(target)
        request_ids.add(item.key.request_id)


def _parsed(items: Sequence[T | MeshError]) -> tuple[dict[int, T], dict[int, MeshError]]:
    """The well-formed items and the malformed ones' errors, by index."""
    parsed: dict[int, T] = {}
    refused: dict[int, MeshError] = {}
    for index, item in enumerate(items):
        if isinstance(item, MeshError):
            refused[index] = item
        else:
            parsed[index] = item
    return parsed, refused


class ObligationBatches:
    """Reserve or commit many obligations in one transaction, one result per item."""

    def __init__(self, transactions: SettlementTransactions, id_factory: Callable[[], str] = new_id) -> None:
        self._tx = transactions
        self._new_id = id_factory

    async def reserve(self, batch: IdempotencyKey, items: Sequence[ReserveItem | MeshError]) -> list[ItemResult]:
        """Reserve each item in order, as :meth:`PositionService.reserve` would, in one transaction.

        ``items`` come parsed; a malformed one arrives as its error and fails alone.
        """
        parsed, refused = _parsed(items)
        _check_batch(len(items), parsed, "payment")
        for index, item in parsed.items():
            if item.payer_id == item.payee_id:
                refused[index] = InvalidArgument.field("payee", "must differ from payer")
        for index in refused:
            parsed.pop(index, None)

        async def operation(uow: SettlementUnitOfWork) -> BatchAnswer:
            now = self._tx.clock()
            work: list[Reservation | Obligation | MeshError | None] = [refused.get(i) for i in range(len(items))]
            snapshots = await _replay_saved(uow, batch.scope, RESERVE_METHOD, parsed, work)
            fresh = [parsed[i] for i, answer in enumerate(work) if answer is None]
            existing = await uow.obligations.lock_many(item.payment_id for item in fresh)
            new = [item for item in fresh if item.payment_id not in existing]
            found = await uow.participants.get_many(p for item in new for p in (item.payer_id, item.payee_id))
            # As the single call: positions are locked (and created) only for a new payment
            # between two known, active participants, the items that reach the cap check.
            wanted: dict[str, set[str]] = {}
            for item in new:
                payer, payee = found.get(item.payer_id), found.get(item.payee_id)
                if payer is not None and payee is not None and payer.is_active and payee.is_active:
                    wanted.setdefault(item.amount.currency, set()).update((payer.id, payee.id))
            positions = await _lock_positions(uow, wanted, create=True)
            for index, item in parsed.items():
                if work[index] is None:
                    amount = item.amount
                    work[index] = Reservation(
                        item.payment_id, item.payer_id, item.payee_id, amount.currency, amount.minor_units, item.kind
                    )
            outcome = apply_reservations(_decided(work), existing, found, positions, now)
            await uow.obligations.add_many(outcome.obligations)
            await uow.positions.save_many(list(outcome.positions.values()))
            for obligation in outcome.obligations:
                audit_obligation(uow, "obligation.reserve", obligation)
            await _save_answers(uow, batch.scope, RESERVE_METHOD, parsed, outcome, snapshots, now)
            # A batch of reservations only adds to a payer's exposure, so its final exposure is
            # its highest: one warning per payer and currency (the single calls log each item).
            for (participant_id, currency), position in outcome.positions.items():
                warn_if_near_cap(position, found[participant_id].cap_for(currency))
            _log_applied(BATCH_RESERVE_METHOD, outcome)
            return BatchAnswer(outcome.results, snapshots)

        answer = await self._tx.run(operation, key=batch, codec=BATCH_CODEC)
        return answer.results

    async def commit(self, batch: IdempotencyKey, items: Sequence[CommitItem | MeshError]) -> list[ItemResult]:
        """Commit each item in order, as :meth:`PositionService.commit` would, in one transaction
        (into each currency's OPEN window)."""
        parsed, refused = _parsed(items)
        _check_batch(len(items), parsed, "name")

        async def operation(uow: SettlementUnitOfWork) -> BatchAnswer:
            now = self._tx.clock()
            work: list[str | Obligation | MeshError | None] = [refused.get(i) for i in range(len(items))]
            snapshots = await _replay_saved(uow, batch.scope, COMMIT_METHOD, parsed, work)
            existing = await uow.obligations.lock_many(
                parsed[i].obligation_id for i, answer in enumerate(work) if answer is None
            )
            # Only RESERVED obligations move positions; their rows exist since the reservation.
            wanted: dict[str, set[str]] = {}
            for obligation in existing.values():
                if obligation.state is ObligationState.RESERVED:
                    wanted.setdefault(obligation.currency, set()).update((obligation.payer_id, obligation.payee_id))
            positions = await _lock_positions(uow, wanted, create=False)
            # Read under a share lock, after the positions, as the single call does: a
            # concurrent close waits for us, or we see the window it opened.
            windows: dict[str, str] = {}
            for currency in sorted(wanted):
                window = await current_open_window(
                    uow, currency, now, lock="share", id_factory=self._new_id, totals=False
                )
                windows[currency] = window.id
            # Stamp after the locks: the commit time then falls inside the windows' open period.
            stamped = max(now, self._tx.clock())
            for index, item in parsed.items():
                if work[index] is None:
                    work[index] = item.obligation_id
            outcome = apply_commits(_decided(work), existing, positions, windows, stamped)
            await uow.positions.save_many(list(outcome.positions.values()))
            await uow.obligations.update_many(outcome.obligations)
            for obligation in outcome.obligations:
                audit_obligation(uow, "obligation.commit", obligation)
            await _save_answers(uow, batch.scope, COMMIT_METHOD, parsed, outcome, snapshots, now)
            _log_applied(BATCH_COMMIT_METHOD, outcome)
            return BatchAnswer(outcome.results, snapshots)

        answer = await self._tx.run(operation, key=batch, codec=BATCH_CODEC)
        return answer.results


async def _replay_saved(
    uow: SettlementUnitOfWork,
    scope: str,
    method: str,
    parsed: Mapping[int, ReserveItem | CommitItem],
    work: list[W | Obligation | MeshError | None],
) -> dict[int, bytes]:
    """Answer in ``work`` each undecided item whose request_id was saved under ``method``: its
    saved obligation, or REQUEST_ID_REUSED for another payload (that item fails, the others go
    on). One query for the whole batch; returns the saved answers' bytes by index."""
    pending = {index: item.key for index, item in parsed.items() if work[index] is None}
    saved = await uow.idempotency.lookup_many(scope, method, (key.request_id for key in pending.values()))
    snapshots: dict[int, bytes] = {}
    for index, key in pending.items():
        found = saved.get(key.request_id)
        if found is None:
            continue
        try:
            snapshot = found.answer_for(key.fingerprint)
        except MeshError as error:
            work[index] = error
            continue
        work[index] = OBLIGATION_CODEC.decode(snapshot)
        snapshots[index] = snapshot
    return snapshots


def _decided(work: list[W | None]) -> list[W]:
    """``work`` once every item has its work or answer."""
    assert all(entry is not None for entry in work)
    return work  # type: ignore[return-value]


async def _lock_positions(
    uow: SettlementUnitOfWork, wanted: dict[str, set[str]], *, create: bool
) -> dict[PositionKey, Position]:
    """The positions of ``wanted`` (participant ids by currency), locked one statement per
    currency, currencies in sorted order (ids sorted inside each) so batches never deadlock."""
    positions: dict[PositionKey, Position] = {}
    for currency in sorted(wanted):
        for participant_id, position in (await uow.positions.lock(currency, wanted[currency], create=create)).items():
            positions[(participant_id, currency)] = position
    return positions


async def _save_answers(
    uow: SettlementUnitOfWork,
    scope: str,
    method: str,
    parsed: Mapping[int, ReserveItem | CommitItem],
    outcome: BatchOutcome,
    snapshots: dict[int, bytes],
    now: dt.datetime,
) -> None:
    """Save each newly answered item under its own key and the single rpc's method (one
    executemany), keeping the bytes for the batch's own saved answer."""
    rows: list[tuple[str, str, bytes]] = []
    for index in outcome.answered:
        obligation = outcome.results[index].obligation
        assert obligation is not None
        key = parsed[index].key
        snapshot = snapshots[index] = OBLIGATION_CODEC.encode(obligation)
        rows.append((key.request_id, key.fingerprint, snapshot))
    if rows:
        await uow.idempotency.save_many(scope, method, rows, now)


def _log_applied(method: str, outcome: BatchOutcome) -> None:
    refused = sum(1 for result in outcome.results if result.obligation is None)
    log.info("batch applied", extra={"method": method, "items": len(outcome.results), "refused": refused})
