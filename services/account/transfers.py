"""One transaction's work on a batch of transfer items, set-based: read, apply, write.

CreateTransfer and BatchCreateTransfers both run :func:`create_transfers` (one item or
500), CreateLinkedTransfers :func:`create_linked_transfers` (the same reads and writes, all
legs or none), PostTransfer, VoidTransfer and BatchPostTransfers :func:`finish_holds`,
PostLinkedTransfers and VoidLinkedTransfers :func:`finish_linked_holds` (all or none). Whatever the
number of items, each table is read once and written once (``executemany``), under the
service's one lock order: transfer rows, then accounts, each in sorted id order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from meshlib.errors import MeshError
from meshlib.idempotency import SavedAnswer
from services.account.answers import LEDGER_SCOPE
from services.account.batches import (
    Applied,
    FinishRequest,
    FinishRule,
    apply_creates,
    apply_finishes,
    apply_linked,
    apply_linked_finishes,
)
from services.account.domain.ledger import Account, Transfer, TransferRequest
from services.account.domain.movements import movements
from services.account.unit_of_work import AccountUnitOfWork

Clock = Callable[[], dt.datetime]


async def write_changes(uow: AccountUnitOfWork, applied: Applied, now: dt.datetime, method: str = "") -> None:
    """Write what the items changed: transfers, statement lines, accounts, the items' keys of ``method``."""
    await uow.transfers.add_many(outcome.transfer for outcome in applied.created)
    if applied.changed:
        await uow.transfers.save_states(outcome.transfer for outcome in applied.changed)
        await uow.entries.drop_pending_many(
            outcome.transfer.id for outcome in applied.changed if outcome.drop_pending_entries
        )
    new_entries = [entry for outcome in (*applied.created, *applied.changed) for entry in outcome.new_entries]
    await uow.entries.add(new_entries)
    # The partners' account events (outbox): each posting on a customer's account, in this transaction.
    await uow.entries.add_movements(movements(new_entries, applied.touched))
    await uow.accounts.save_many(applied.touched.values())
    _audit_transfers(uow, [outcome.transfer for outcome in applied.created], created=True)
    _audit_transfers(uow, [outcome.transfer for outcome in applied.changed], created=False)
    if applied.keys:
        await uow.idempotency.save_many(LEDGER_SCOPE, method, applied.keys, now)


def _audit_transfers(uow: AccountUnitOfWork, done: list[Transfer], *, created: bool) -> None:
    """One record per outcome (the transfers' state) of a transaction, listing its transfers:
    ``transfer.create`` for transfers made, else named by the state reached (``transfer.posted``,
    ``transfer.voided``, ``transfer.expired``).

    The transfers are the ledger's own immutable journal; the audit trail says who did which
    of them, in the hash chain. A batch of 500 is one record (one row, one encoding), not 500,
    so the trail costs a ledger call what it costs any other operation.
    """
    by_outcome: dict[str, list[Transfer]] = {}
    for transfer in done:
        by_outcome.setdefault(transfer.state.value, []).append(transfer)
    for outcome, transfers in by_outcome.items():
        uow.audit.record(
            "transfer.create" if created else f"transfer.{outcome.lower()}",
            f"transfers/{transfers[0].id}" if len(transfers) == 1 else "transfers",
            outcome=outcome,
            details={
                "transfers": [
                    {
                        "id": transfer.id,
                        "debit_account": transfer.debit_account_id,
                        "credit_account": transfer.credit_account_id,
                        "amount_minor": transfer.amount,
                        "currency": transfer.currency,
                        "type": transfer.type.value,
                        "reference": transfer.reference,
                    }
                    for transfer in transfers
                ]
            },
        )


def audit_account(uow: AccountUnitOfWork, action: str, account: Account, *, reason: str = "") -> None:
    """An account's change in the audit trail (its id, never its full number)."""
    details: dict[str, object] = {"type": account.type.value, "currency": account.currency}
    if reason:
        details["reason"] = reason[:500]
    uow.audit.record(
        action,
        f"accounts/{account.id}",
        outcome=account.status.value,
        customer_id=account.customer_id,
        details=details,
    )


async def create_transfers(
    uow: AccountUnitOfWork, items: Sequence[TransferRequest | MeshError], clock: Clock
) -> tuple[Applied, dt.datetime]:
    """Create the items' transfers (each a checked request, or the error its shape failed with).

    Accounts first, then the ids: read under the account locks, a concurrent create of the
    same id over the same accounts has committed by now (one over other accounts loses the
    race on the primary key, and the transaction's rerun replays it).
    """
    existing, locked = await _read_for_creates(uow, items)
    now = clock()
    applied = apply_creates(items, existing, locked, now)
    await write_changes(uow, applied, now)
    return applied, now


async def create_linked_transfers(
    uow: AccountUnitOfWork, legs: Sequence[TransferRequest | MeshError], clock: Clock
) -> tuple[Applied, dt.datetime]:
    """Create a linked chain's transfers, all of them or none.

    The same reads and writes as :func:`create_transfers`, the legs applied by
    :func:`~services.account.batches.apply_linked`: a refused leg raises before anything is
    written, and the caller's transaction rolls back.
    """
    existing, locked = await _read_for_creates(uow, legs)
    now = clock()
    applied = apply_linked(legs, existing, locked, now)
    await write_changes(uow, applied, now)
    return applied, now


async def _read_for_creates(
    uow: AccountUnitOfWork, items: Sequence[TransferRequest | MeshError]
) -> tuple[dict[str, Transfer], dict[str, Account]]:
    """The items' transfers that exist already, and their accounts, locked."""
    requests = [item for item in items if isinstance(item, TransferRequest)]
    locked = await uow.accounts.lock(
        account_id for request in requests for account_id in (request.debit_account_id, request.credit_account_id)
    )
    existing = await uow.transfers.many(request.transfer_id for request in requests)
    return existing, locked


async def finish_holds(
    uow: AccountUnitOfWork, method: str, items: Sequence[FinishRequest | MeshError], rule: FinishRule, clock: Clock
) -> tuple[Applied, dt.datetime]:
    """Post (or void: ``rule``) the items' holds, each under its own key of ``method``.

    The holds are locked first, then the items' keys are read under those locks (a
    concurrent post of the same key waits, then replays), then the accounts of the holds
    still to finish.
    """
    holds, keys, locked = await _read_for_finishes(uow, method, items)
    now = clock()
    applied = apply_finishes(items, holds, keys, locked, rule, now)
    await write_changes(uow, applied, now, method)
    return applied, now


async def finish_linked_holds(
    uow: AccountUnitOfWork, method: str, items: Sequence[FinishRequest | MeshError], rule: FinishRule, clock: Clock
) -> tuple[Applied, dt.datetime]:
    """Post (or void) a linked chain's holds, all of them or none.

    The same reads and writes as :func:`finish_holds`, the items applied by
    :func:`~services.account.batches.apply_linked_finishes`: a refused item raises before
    anything is written, and the caller's transaction rolls back.
    """
    holds, keys, locked = await _read_for_finishes(uow, method, items)
    now = clock()
    applied = apply_linked_finishes(items, holds, keys, locked, rule, now)
    await write_changes(uow, applied, now, method)
    return applied, now


async def _read_for_finishes(
    uow: AccountUnitOfWork, method: str, items: Sequence[FinishRequest | MeshError]
) -> tuple[dict[str, Transfer], dict[str, SavedAnswer], dict[str, Account]]:
    """The items' holds (locked), their keys of ``method``, and the accounts still to change (locked)."""
    requests = [item for item in items if isinstance(item, FinishRequest)]
    holds = await uow.transfers.lock_many(request.transfer_id for request in requests)
    keys = await uow.idempotency.lookup_many(LEDGER_SCOPE, method, (request.request_id for request in requests))
    locked = await uow.accounts.lock(
        account_id
        for request in requests
        if request.request_id not in keys and (hold := holds.get(request.transfer_id)) is not None
        for account_id in (hold.debit_account_id, hold.credit_account_id)
    )
    return holds, keys, locked
