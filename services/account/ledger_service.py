"""The ledger's service layer: transfers, holds and their expiry (no gRPC, no SQL).

Each operation is one transaction: lock what it changes (transfer row first, then the
accounts in sorted id order), apply the domain rule, persist, commit. A transfer's id is
the client's request_id, so the transfers table itself is the idempotency store of
CreateTransfer (kept forever); Post/Void/Batch save their first answer in the
idempotency-key table in the same transaction. An item of BatchPostTransfers saves its
answer under PostTransfer's own key (same scope, method and fingerprint), so either rpc
replays a post the other made.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import IntegrityError

from meshlib.errors import AlreadyExists, FailedPrecondition, InvalidArgument, MeshError, NotFound
from meshlib.idempotency import RETENTION as IDEMPOTENCY_RETENTION
from meshlib.idempotency import SavedAnswer, validate_request_id
from meshlib.money import Amount
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint
from meshlib.storage import retry_on_conflict
from services.account.domain.ledger import (
    Account,
    AccountStatus,
    AccountType,
    Outcome,
    Transfer,
    TransferRequest,
    TransferType,
    create_transfer,
    expire_transfer,
    new_account_number,
    new_transfer,
    post_transfer,
    void_transfer,
)
from services.account.repository import TransferFilter
from services.account.unit_of_work import AccountUnitOfWork

log = logging.getLogger("services.account.ledger")

T = TypeVar("T")
Clock = Callable[[], dt.datetime]
UowFactory = Callable[..., AccountUnitOfWork]
MAX_BATCH = 500
LEDGER_SCOPE = "ledger"


def utc_now() -> dt.datetime:
    """The wall clock, in UTC."""
    return dt.datetime.now(dt.UTC)


def request_fingerprint(**fields: Any) -> str:
    """A stable hash of a command's payload (the idempotency key itself excluded)."""

    def plain(value: Any) -> Any:
        if is_dataclass(value) and not isinstance(value, type):
            return asdict(value)
        return str(value)

    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=plain).encode()).hexdigest()


_TYPE_TEXT = {kind: str(kind) for kind in TransferType}


def _plain_item(item: TransferRequest | MeshError) -> Any:
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


# A batch's saved answer (format 2), one entry per item: ["c", index] for a transfer this
# batch created (rebuilt on replay from the same request and the saved "at": the replay's
# payload is the same, its fingerprint says so), ["t", index, transfer] for a replayed
# older transfer, ["e", index, reason, message] for a refused item. Format 1, a list of
# BatchItemResult.to_dict(), is still read: answers are kept for 48 hours.
_CREATED, _EXISTING, _REFUSED = "c", "t", "e"


def _results_json(results: list[BatchItemResult], created_ids: set[str], now: dt.datetime) -> bytes:
    """A batch's answer as saved for replays (read back by :func:`_results_from_json`)."""
    compact: list[list[Any]] = []
    for result in results:
        if result.transfer is None:
            compact.append([_REFUSED, result.index, result.error_reason, result.error_message])
        elif result.transfer.id in created_ids:
            compact.append([_CREATED, result.index])
        else:
            compact.append([_EXISTING, result.index, result.transfer.to_dict()])
    return json.dumps({"format": 2, "at": now.isoformat(), "results": compact}).encode()


def _results_from_json(saved: bytes, requests: dict[int, TransferRequest]) -> list[BatchItemResult]:
    """The inverse of :func:`_results_json` (and the reader of format 1)."""
    data = json.loads(saved)
    if isinstance(data, list):
        return [BatchItemResult.from_dict(item) for item in data]
    at = dt.datetime.fromisoformat(data["at"])
    results = []
    for kind, index, *rest in data["results"]:
        if kind == _CREATED:
            results.append(BatchItemResult(index, new_transfer(requests[index], at)))
        elif kind == _EXISTING:
            results.append(BatchItemResult(index, Transfer.from_dict(rest[0])))
        else:
            results.append(BatchItemResult(index, None, rest[0], rest[1]))
    return results


# BatchPostTransfers' saved answer (format 1), one entry per item: ["f", index] for a hold this
# batch finished (posted: a final state, so on replay the transfer row as it is now is exactly
# the answer it gave), ["t", index, transfer] for an item answered from an older key of
# PostTransfer (kept in full: that key may be purged before the batch's), ["e", index, reason,
# message] for a refused item.
_FINISHED = "f"


def finish_fingerprint(transfer_id: str) -> str:
    """The fingerprint of a PostTransfer (or VoidTransfer) key.

    A BatchPostTransfers item saves the very same one: that is what makes its request_id
    one key with the single rpc's.
    """
    return request_fingerprint(transfer=transfer_id)


def _plain_finish(item: FinishRequest | MeshError) -> Any:
    """A BatchPostTransfers item as the batch's fingerprint sees it."""
    if isinstance(item, MeshError):
        return str(item)
    return [item.request_id, item.transfer_id]


def _finished_json(results: list[BatchItemResult], finished: set[int], now: dt.datetime) -> bytes:
    """A batch of posts' answer as saved for replays (read back by :func:`_finished_from_json`)."""
    compact: list[list[Any]] = []
    for result in results:
        if result.transfer is None:
            compact.append([_REFUSED, result.index, result.error_reason, result.error_message])
        elif result.index in finished:
            compact.append([_FINISHED, result.index])
        else:
            compact.append([_EXISTING, result.index, result.transfer.to_dict()])
    return json.dumps({"format": 1, "at": now.isoformat(), "results": compact}).encode()


async def _finished_from_json(
    saved: bytes, uow: AccountUnitOfWork, requests: dict[int, FinishRequest]
) -> list[BatchItemResult]:
    """The inverse of :func:`_finished_json`: the finished holds are read back in one SELECT."""
    data = json.loads(saved)
    finished_ids = [requests[index].transfer_id for kind, index, *_ in data["results"] if kind == _FINISHED]
    rows = await uow.transfers.many(finished_ids)
    results = []
    for kind, index, *rest in data["results"]:
        if kind == _FINISHED:
            results.append(BatchItemResult(index, rows[requests[index].transfer_id]))
        elif kind == _EXISTING:
            results.append(BatchItemResult(index, Transfer.from_dict(rest[0])))
        else:
            results.append(BatchItemResult(index, None, rest[0], rest[1]))
    return results


async def run_transaction(operation: Callable[[], Awaitable[T]], *, attempts: int = 4) -> T:
    """Run a whole transaction, again after a lost race on a unique key or a lock conflict.

    Two concurrent creates of the same transfer id (or of a currency's equity account)
    race on the primary key; the loser's retry finds the winner's row and answers from it.
    """
    for attempt in range(1, attempts + 1):
        try:
            return await retry_on_conflict(operation)
        except IntegrityError:
            if attempt == attempts:
                raise
            log.info("unique key race, retrying the transaction", extra={"attempt": attempt})
    raise AssertionError("unreachable")


def validate_transfer_id(transfer_id: str, field: str) -> str:
    """A transfer id has the request_id shape (it is one)."""
    return validate_request_id(transfer_id, field)


def _account_not_found(account_id: str) -> NotFound:
    return NotFound("account not found", metadata={"resource_name": f"accounts/{account_id}"})


def _transfer_not_found(transfer_id: str) -> NotFound:
    return NotFound("transfer not found", metadata={"resource_name": f"transfers/{transfer_id}"})


def _hold_expired() -> FailedPrecondition:
    return FailedPrecondition("the hold expired and was released", reason="TRANSFER_EXPIRED")


def _replay(existing: Transfer, request: TransferRequest) -> Transfer:
    if not existing.matches(request):
        raise AlreadyExists(
            "a transfer with this id exists with different fields",
            reason="TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS",
            metadata={"transfer": f"transfers/{existing.id}"},
        )
    return existing


@dataclass(frozen=True, slots=True)
class FinishRequest:
    """One post of a batch: the item's own idempotency key and the hold it names."""

    request_id: str
    transfer_id: str


@dataclass
class _FinishedBatch:
    """What a batch of posts did in memory, to be written in one go."""

    results: list[BatchItemResult] = field(default_factory=list)
    # Changed transfers: the finished holds and the elapsed ones released on the way.
    outcomes: list[Outcome] = field(default_factory=list)
    touched: dict[str, Account] = field(default_factory=dict)
    # New PostTransfer keys: (request_id, fingerprint, answer).
    answers: list[tuple[str, str, bytes]] = field(default_factory=list)
    finished: set[int] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class BatchItemResult:
    """The outcome of one item of a batch: a transfer, or why it failed."""

    index: int
    transfer: Transfer | None = None
    error_reason: str | None = None
    error_message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (saved as the batch's idempotent answer)."""
        return {
            "index": self.index,
            "transfer": self.transfer.to_dict() if self.transfer else None,
            "error_reason": self.error_reason,
            "error_message": self.error_message,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchItemResult:
        """The inverse of :meth:`to_dict`."""
        return cls(
            index=data["index"],
            transfer=Transfer.from_dict(data["transfer"]) if data["transfer"] else None,
            error_reason=data["error_reason"],
            error_message=data["error_message"],
        )


@dataclass(frozen=True, slots=True)
class AccountItemResult:
    """The outcome of one name of BatchGetLedgerAccounts: an account, or why it failed."""

    index: int
    account: Account | None = None
    error_reason: str | None = None
    error_message: str = ""


@dataclass(frozen=True)
class TransferPage:
    """One page of ListTransfers."""

    transfers: list[Transfer]
    next_page_token: str


async def persist(uow: AccountUnitOfWork, outcome: Outcome, accounts: list[Account], *, new: bool) -> None:
    """Write what a rule changed: the transfer, its statement lines, the two accounts."""
    if new:
        await uow.transfers.add(outcome.transfer)
    else:
        await uow.transfers.save_state(outcome.transfer)
    if outcome.drop_pending_entries:
        await uow.entries.drop_pending(outcome.transfer.id)
    await uow.entries.add(outcome.new_entries)
    await uow.accounts.save_many(accounts)


class LedgerService:
    """Transfers: create (single-phase or hold), post, void, expire, read, batch, fund."""

    def __init__(self, uow: UowFactory, clock: Clock = utc_now) -> None:
        self._uow = uow
        self._now = clock

    # ---- create ----

    async def create_transfer(self, request: TransferRequest) -> Transfer:
        """Create a transfer whose id is the request_id; a replay returns the existing one."""
        validate_transfer_id(request.transfer_id, "request_id")
        request.validate()
        transfer = await run_transaction(lambda: self._create_once(request))
        if transfer.is_due_to_expire(self._now()):
            # A replay touching an elapsed hold releases it and answers with its final state.
            transfer = await self.expire_one(transfer.id) or transfer
        return transfer

    async def _create_once(self, request: TransferRequest) -> Transfer:
        async with self._uow() as uow:
            # Accounts first, then the id: read under the account locks, a concurrent create of
            # the same id over the same accounts has committed by now (and one over other
            # accounts loses the race on the primary key and retries into a replay).
            locked = await uow.accounts.lock([request.debit_account_id, request.credit_account_id])
            existing = await uow.transfers.get(request.transfer_id)
            if existing is not None:
                return _replay(existing, request)
            debit, credit = self._pair(locked, request)
            outcome = create_transfer(request, debit, credit, self._now())
            await persist(uow, outcome, [debit, credit], new=True)
            await uow.commit()
        log.info(
            "transfer created",
            extra={
                "transfer": outcome.transfer.id,
                "type": outcome.transfer.type.value,
                "amount": Amount(outcome.transfer.currency, outcome.transfer.amount).format(),
            },
        )
        return outcome.transfer

    @staticmethod
    def _pair(locked: dict[str, Account], request: TransferRequest) -> tuple[Account, Account]:
        debit = locked.get(request.debit_account_id)
        if debit is None:
            raise _account_not_found(request.debit_account_id)
        credit = locked.get(request.credit_account_id)
        if credit is None:
            raise _account_not_found(request.credit_account_id)
        return debit, credit

    # ---- post / void / expire ----

    async def post_transfer(self, request_id: str, transfer_id: str) -> Transfer:
        """Post a hold's full amount; a replay with the same request_id returns the first answer."""
        return await self._finish("PostTransfer", request_id, transfer_id, post_transfer)

    async def void_transfer(self, request_id: str, transfer_id: str) -> Transfer:
        """Release a hold; a replay with the same request_id returns the first answer."""
        return await self._finish("VoidTransfer", request_id, transfer_id, void_transfer)

    async def _finish(
        self,
        method: str,
        request_id: str,
        transfer_id: str,
        rule: Callable[[Transfer, Account, Account, dt.datetime], Outcome],
    ) -> Transfer:
        validate_request_id(request_id)
        fingerprint = finish_fingerprint(transfer_id)

        async def once() -> Transfer:
            expired = False
            async with self._uow() as uow:
                transfer = await uow.transfers.get(transfer_id, lock=True)
                if transfer is None:
                    raise _transfer_not_found(transfer_id)
                # Looked up under the transfer's lock, so a concurrent twin waits and then replays.
                saved = await uow.idempotency.lookup(LEDGER_SCOPE, method, request_id, fingerprint)
                if saved is not None:
                    return Transfer.from_dict(json.loads(saved))
                locked = await uow.accounts.lock([transfer.debit_account_id, transfer.credit_account_id])
                debit, credit = locked[transfer.debit_account_id], locked[transfer.credit_account_id]
                now = self._now()
                if transfer.is_due_to_expire(now):
                    # Touching an expired hold releases it (lazy expiry), then refuses.
                    outcome = expire_transfer(transfer, debit, credit, now)
                    expired = True
                else:
                    outcome = rule(transfer, debit, credit, now)
                    await uow.idempotency.save(
                        LEDGER_SCOPE,
                        method,
                        request_id,
                        fingerprint,
                        json.dumps(outcome.transfer.to_dict()).encode(),
                        now,
                    )
                await persist(uow, outcome, [debit, credit], new=False)
                await uow.commit()
            if expired:
                raise _hold_expired()
            log.info("transfer finished", extra={"transfer": transfer_id, "state": outcome.transfer.state.value})
            return outcome.transfer

        return await run_transaction(once)

    async def expire_one(self, transfer_id: str) -> Transfer | None:
        """Release one hold if its timeout has elapsed; returns the transfer as it is now."""

        async def once() -> Transfer | None:
            async with self._uow() as uow:
                transfer = await uow.transfers.get(transfer_id, lock=True)
                if transfer is None or not transfer.is_due_to_expire(self._now()):
                    return transfer
                locked = await uow.accounts.lock([transfer.debit_account_id, transfer.credit_account_id])
                debit, credit = locked[transfer.debit_account_id], locked[transfer.credit_account_id]
                outcome = expire_transfer(transfer, debit, credit, self._now())
                await persist(uow, outcome, [debit, credit], new=False)
                await uow.commit()
            log.info("hold expired", extra={"transfer": transfer_id})
            return outcome.transfer

        return await run_transaction(once)

    async def expire_due(self, limit: int = 200) -> int:
        """Release every hold whose timeout has elapsed (up to ``limit``); returns how many."""
        async with self._uow(read_only=True) as uow:
            due = await uow.transfers.due_for_expiry(self._now(), limit)
        released = 0
        for transfer_id in due:
            transfer = await self.expire_one(transfer_id)
            if transfer is not None and transfer.state.value == "EXPIRED":
                released += 1
        return released

    async def purge_old_records(self, *, consent_read_days: int = 2) -> int:
        """Forget idempotency answers past their retention and old daily read counters.

        Transfer ids are never purged: the transfers table keeps them forever.
        """
        now = self._now()

        async def once() -> int:
            async with self._uow() as uow:
                purged = await uow.idempotency.purge(now - IDEMPOTENCY_RETENTION)
                purged += await uow.consent_reads.purge(now.date() - dt.timedelta(days=consent_read_days))
                await uow.commit()
            return purged

        return await run_transaction(once)

    # ---- reads ----

    async def get_account(self, account_id: str) -> Account:
        """One account as the ledger knows it (for the mesh's own services)."""
        async with self._uow(read_only=True) as uow:
            account = await uow.accounts.get(account_id)
        if account is None:
            raise _account_not_found(account_id)
        return account

    async def batch_get_accounts(self, items: list[str | MeshError]) -> list[AccountItemResult]:
        """Up to 500 accounts in one read, each item answered exactly as :meth:`get_account` would.

        An item is an account id, or the error its malformed name already failed with (the
        converter's, as GetLedgerAccount's). Duplicates are allowed: each gets its own result.
        The distinct ids are read with one SELECT in one read-only unit of work; the results
        are built in memory, in request order.
        """
        if not items:
            raise InvalidArgument.field("names", "must hold at least one name")
        if len(items) > MAX_BATCH:
            raise InvalidArgument.field("names", f"at most {MAX_BATCH} names")
        account_ids = {item for item in items if not isinstance(item, MeshError)}
        found: dict[str, Account] = {}
        if account_ids:
            async with self._uow(read_only=True) as uow:
                found = await uow.accounts.many(account_ids)
        results: list[AccountItemResult] = []
        for index, item in enumerate(items):
            if isinstance(item, MeshError):
                error: MeshError = item
            else:
                account = found.get(item)
                if account is not None:
                    results.append(AccountItemResult(index, account))
                    continue
                error = _account_not_found(item)
            results.append(AccountItemResult(index, None, error.reason, error.message))
        return results

    async def get_transfer(self, transfer_id: str) -> Transfer:
        """One transfer (an elapsed hold is released on the way)."""
        async with self._uow(read_only=True) as uow:
            transfer = await uow.transfers.get(transfer_id)
        if transfer is None:
            raise NotFound("transfer not found", metadata={"resource_name": f"transfers/{transfer_id}"})
        if transfer.is_due_to_expire(self._now()):
            transfer = await self.expire_one(transfer_id) or transfer
        return transfer

    async def list_transfers(self, filters: TransferFilter, size: int, page_token: str) -> TransferPage:
        """Newest first, keyset-paginated so concurrent inserts never shift a page."""
        if filters.from_time and filters.to_time and filters.from_time > filters.to_time:
            raise InvalidArgument.field("from_create_time", "must not be after to_create_time")
        filters_hash = filter_fingerprint(
            account=filters.account_id,
            reference=filters.reference,
            from_time=filters.from_time.isoformat() if filters.from_time else None,
            to_time=filters.to_time.isoformat() if filters.to_time else None,
        )
        cursor = decode_page_token(page_token, filters_hash)
        after = None
        if cursor is not None:
            try:
                after = (dt.datetime.fromisoformat(cursor["t"]), str(cursor["id"]))
            except (KeyError, TypeError, ValueError):
                raise InvalidArgument.field(
                    "page_token", "not a token this server issued", reason="PAGE_TOKEN_INVALID"
                ) from None
        async with self._uow(read_only=True) as uow:
            rows = await uow.transfers.page(filters, after, size + 1)
        next_token = ""
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1]
            next_token = encode_page_token({"t": last.created_at.isoformat(), "id": last.id}, filters_hash)
        return TransferPage(rows, next_token)

    # ---- batch ----

    async def batch_create(self, request_id: str, items: list[TransferRequest | MeshError]) -> list[BatchItemResult]:
        """Apply up to 500 transfers in order in one transaction, each with its own result.

        An item may arrive already failed (a malformed request the converter refused): it
        gets its own error result like any other refused item.
        """
        validate_request_id(request_id)
        if not items:
            raise InvalidArgument.field("requests", "must hold at least one transfer")
        if len(items) > MAX_BATCH:
            raise InvalidArgument.field("requests", f"at most {MAX_BATCH} transfers")
        seen: set[str] = set()
        for index, item in enumerate(items):
            if isinstance(item, TransferRequest) and item.transfer_id:
                if item.transfer_id in seen:
                    raise InvalidArgument.field(f"requests[{index}].request_id", "duplicate transfer id in the batch")
                seen.add(item.transfer_id)
        fingerprint = request_fingerprint(requests=[_plain_item(item) for item in items])
        # Shape errors are per item: they never reach the database.
        shape_errors: dict[int, MeshError] = {}
        requests: dict[int, TransferRequest] = {}
        for index, item in enumerate(items):
            try:
                if isinstance(item, MeshError):
                    raise item
                validate_transfer_id(item.transfer_id, "request_id")
                item.validate()
                requests[index] = item
            except MeshError as error:
                shape_errors[index] = error

        async def once() -> list[BatchItemResult]:
            async with self._uow() as uow:
                saved = await uow.idempotency.lookup(LEDGER_SCOPE, "BatchCreateTransfers", request_id, fingerprint)
                if saved is not None:
                    return _results_from_json(saved, requests)
                account_ids = {
                    account_id
                    for request in requests.values()
                    for account_id in (request.debit_account_id, request.credit_account_id)
                }
                locked = await uow.accounts.lock(account_ids)
                # One SELECT for every id of the batch, under the account locks (as the single path).
                existing = await uow.transfers.many(request.transfer_id for request in requests.values())
                now = self._now()
                results, created, touched = self._apply_batch(items, shape_errors, requests, existing, locked, now)
                await uow.transfers.add_many(outcome.transfer for outcome in created)
                await uow.entries.add([entry for outcome in created for entry in outcome.new_entries])
                await uow.accounts.save_many(touched.values())
                await uow.idempotency.save(
                    LEDGER_SCOPE,
                    "BatchCreateTransfers",
                    request_id,
                    fingerprint,
                    _results_json(results, {outcome.transfer.id for outcome in created}, now),
                    now,
                )
                await uow.commit()
            log.info("batch applied", extra={"items": len(results), "failed": len(results) - len(created)})
            return results

        return await run_transaction(once)

    def _apply_batch(
        self,
        items: list[TransferRequest | MeshError],
        shape_errors: dict[int, MeshError],
        requests: dict[int, TransferRequest],
        existing: dict[str, Transfer],
        locked: dict[str, Account],
        now: dt.datetime,
    ) -> tuple[list[BatchItemResult], list[Outcome], dict[str, Account]]:
        """The batch's rules in memory, item by item in order, over the locked accounts.

        Each accepted item changes the in-memory accounts the next items see (a refused item
        changes nothing), exactly as applying the items one by one would. Returns the
        per-item results, the accepted outcomes to write, and the accounts they changed.
        """
        results: list[BatchItemResult] = []
        created: list[Outcome] = []
        touched: dict[str, Account] = {}
        for index in range(len(items)):
            try:
                if index in shape_errors:
                    raise shape_errors[index]
                request = requests[index]
                found = existing.get(request.transfer_id)
                if found is not None:
                    results.append(BatchItemResult(index, _replay(found, request)))
                    continue
                debit, credit = self._pair(locked, request)
                # Shapes were checked before the transaction (a shape error never reaches it).
                outcome = create_transfer(request, debit, credit, now, validated=True)
            except MeshError as error:
                results.append(BatchItemResult(index, None, error.reason, error.message))
                continue
            created.append(outcome)
            touched[debit.id], touched[credit.id] = debit, credit
            results.append(BatchItemResult(index, outcome.transfer))
        return results, created, touched

    async def batch_post(self, request_id: str, items: list[FinishRequest | MeshError]) -> list[BatchItemResult]:
        """Post up to 500 holds in order in one transaction, each exactly as PostTransfer would.

        Each item's request_id is PostTransfer's own key (same scope, method, fingerprint):
        an item replays an answer the single rpc saved, and saves one it will replay. An
        item may arrive already failed (a name the converter refused).
        """
        return await self._finish_batch("PostTransfer", "BatchPostTransfers", request_id, items, post_transfer)

    async def _finish_batch(
        self,
        method: str,
        batch_method: str,
        request_id: str,
        items: list[FinishRequest | MeshError],
        rule: Callable[[Transfer, Account, Account, dt.datetime], Outcome],
    ) -> list[BatchItemResult]:
        """:meth:`_finish` for many items: one lock of the holds, one of the accounts, set-based writes."""
        validate_request_id(request_id)
        if not items:
            raise InvalidArgument.field("requests", "must hold at least one item")
        if len(items) > MAX_BATCH:
            raise InvalidArgument.field("requests", f"at most {MAX_BATCH} items")
        seen: set[str] = set()
        for index, item in enumerate(items):
            if isinstance(item, FinishRequest):
                # Two posts of one hold in one batch is the caller's bug (the second could only fail
                # or replay): refuse the call, as BatchCreateTransfers refuses a duplicate id.
                if item.transfer_id in seen:
                    raise InvalidArgument.field(f"requests[{index}].name", "names a transfer another item names")
                seen.add(item.transfer_id)
        fingerprint = request_fingerprint(requests=[_plain_finish(item) for item in items])
        # Shape errors are per item, as the single rpc refuses them before the database.
        shape_errors: dict[int, MeshError] = {}
        requests: dict[int, FinishRequest] = {}
        for index, item in enumerate(items):
            try:
                if isinstance(item, MeshError):
                    raise item
                validate_request_id(item.request_id)
                requests[index] = item
            except MeshError as error:
                shape_errors[index] = error

        async def once() -> list[BatchItemResult]:
            async with self._uow() as uow:
                saved = await uow.idempotency.lookup(LEDGER_SCOPE, batch_method, request_id, fingerprint)
                if saved is not None:
                    return await _finished_from_json(saved, uow, requests)
                # The single path's lock order: the holds, then their accounts; the items' keys
                # are read under the holds' locks, so a concurrent single post waits, then replays.
                holds = await uow.transfers.lock_many(request.transfer_id for request in requests.values())
                keys = await uow.idempotency.lookup_many(
                    LEDGER_SCOPE, method, (request.request_id for request in requests.values())
                )
                locked = await uow.accounts.lock(
                    account_id
                    for hold in holds.values()
                    for account_id in (hold.debit_account_id, hold.credit_account_id)
                )
                now = self._now()
                batch = self._apply_finish_batch(len(items), shape_errors, requests, holds, keys, locked, rule, now)
                await uow.transfers.save_states(outcome.transfer for outcome in batch.outcomes)
                await uow.entries.drop_pending_many(
                    outcome.transfer.id for outcome in batch.outcomes if outcome.drop_pending_entries
                )
                await uow.entries.add([entry for outcome in batch.outcomes for entry in outcome.new_entries])
                await uow.accounts.save_many(batch.touched.values())
                await uow.idempotency.save_many(LEDGER_SCOPE, method, batch.answers, now)
                await uow.idempotency.save(
                    LEDGER_SCOPE,
                    batch_method,
                    request_id,
                    fingerprint,
                    _finished_json(batch.results, batch.finished, now),
                    now,
                )
                await uow.commit()
            log.info(
                "batch finished",
                extra={
                    "method": method,
                    "items": len(items),
                    "failed": sum(1 for result in batch.results if result.transfer is None),
                },
            )
            return batch.results

        return await run_transaction(once)

    @staticmethod
    def _apply_finish_batch(
        count: int,
        shape_errors: dict[int, MeshError],
        requests: dict[int, FinishRequest],
        holds: dict[str, Transfer],
        keys: dict[str, SavedAnswer],
        locked: dict[str, Account],
        rule: Callable[[Transfer, Account, Account, dt.datetime], Outcome],
        now: dt.datetime,
    ) -> _FinishedBatch:
        """The batch's rules in memory, item by item in order, exactly as :meth:`_finish` each.

        Per item, as the single path: the hold must exist (RESOURCE_NOT_FOUND), then a saved
        key answers (or REQUEST_ID_REUSED), then an elapsed hold is released and refused
        (TRANSFER_EXPIRED), then the rule. A key an earlier item saved is seen by the later
        ones, and an accepted item changes the in-memory accounts the next items see.
        """
        batch = _FinishedBatch()
        known = dict(keys)
        for index in range(count):
            try:
                if index in shape_errors:
                    raise shape_errors[index]
                request = requests[index]
                hold = holds.get(request.transfer_id)
                if hold is None:
                    raise _transfer_not_found(request.transfer_id)
                item_fingerprint = finish_fingerprint(request.transfer_id)
                key = known.get(request.request_id)
                if key is not None:
                    answer = Transfer.from_dict(json.loads(key.answer_for(item_fingerprint)))
                    batch.results.append(BatchItemResult(index, answer))
                    continue
                debit, credit = locked[hold.debit_account_id], locked[hold.credit_account_id]
                if hold.is_due_to_expire(now):
                    # As the single path: touching an elapsed hold releases it (kept), then refuses.
                    batch.outcomes.append(expire_transfer(hold, debit, credit, now))
                    batch.touched[debit.id], batch.touched[credit.id] = debit, credit
                    raise _hold_expired()
                outcome = rule(hold, debit, credit, now)
            except MeshError as error:
                batch.results.append(BatchItemResult(index, None, error.reason, error.message))
                continue
            answer_json = json.dumps(outcome.transfer.to_dict()).encode()
            known[request.request_id] = SavedAnswer(request.request_id, item_fingerprint, answer_json)
            batch.answers.append((request.request_id, item_fingerprint, answer_json))
            batch.outcomes.append(outcome)
            batch.touched[debit.id], batch.touched[credit.id] = debit, credit
            batch.finished.add(index)
            batch.results.append(BatchItemResult(index, outcome.transfer))
        return batch

    # ---- funding from the bank's equity ----

    async def ensure_equity_account(self, currency: str) -> str:
        """The bank equity account of ``currency``, opened on first use; returns its id."""

        async def once() -> str:
            async with self._uow() as uow:
                existing = await uow.accounts.equity_id(currency)
                if existing is not None:
                    return existing
                now = self._now()
                account = Account(
                    id=f"equity-{currency.lower()}-{uuid.uuid4().hex[:12]}",
                    number=new_account_number(),
                    currency=currency,
                    type=AccountType.BANK_EQUITY,
                    status=AccountStatus.ACTIVE,
                    overdraft_limit=0,
                    customer_id=None,
                    display_name=f"Bank equity {currency}",
                    opened_at=now,
                    updated_at=now,
                )
                await uow.accounts.add(account)
                await uow.commit()
            log.info("bank equity account opened", extra={"currency": currency, "account": account.id})
            return account.id

        return await run_transaction(once)

    async def fund_account(self, request_id: str, account_id: str, amount: Amount, description: str) -> Transfer:
        """Credit an account from its currency's bank equity account (a single-phase transfer)."""
        validate_transfer_id(request_id, "request_id")
        async with self._uow(read_only=True) as uow:
            account = await uow.accounts.get(account_id)
        if account is None:
            raise _account_not_found(account_id)
        if amount.currency != account.currency:
            raise InvalidArgument.field(
                "amount.currency_code", "must be the account's currency", reason="CURRENCY_MISMATCH"
            )
        equity_id = await self.ensure_equity_account(account.currency)
        return await self.create_transfer(
            TransferRequest(
                transfer_id=request_id,
                debit_account_id=equity_id,
                credit_account_id=account_id,
                amount=amount,
                type=TransferType.SINGLE_PHASE,
                description=description,
            )
        )
