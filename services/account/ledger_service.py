"""The ledger's service layer: transfers, holds and their expiry, funding, reads (no gRPC, no SQL).

Each operation is one transaction run by :class:`meshlib.storage.Transactions` (lock what it
changes, apply the domain rule, persist, commit). A single transfer rpc is a batch of one:
CreateTransfer runs the very steps of BatchCreateTransfers
(:func:`~services.account.transfers.create_transfers`), CreateLinkedTransfers the same
steps keeping all legs or none (:func:`~services.account.transfers.create_linked_transfers`),
PostTransfer and VoidTransfer those of
BatchPostTransfers (:func:`~services.account.transfers.finish_holds`), PostLinkedTransfers and
VoidLinkedTransfers the same keeping all items or none
(:func:`~services.account.transfers.finish_linked_holds`), so an item of a batch
answers exactly what the single rpc would, and shares its key (:mod:`services.account.answers`).
GetLedgerAccount is BatchGetLedgerAccounts of one.

The batch rpcs' own keys go through the runner's keys. An item's key (PostTransfer's and
VoidTransfer's, a BatchPostTransfers item's) is read by the transaction itself, set-based and
under its hold's lock (:func:`~services.account.transfers.finish_holds`): a concurrent twin
waits for the lock, then replays."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from meshlib.errors import InvalidArgument, MeshError
from meshlib.idempotency import RETENTION as IDEMPOTENCY_RETENTION
from meshlib.idempotency import validate_request_id
from meshlib.money import Amount
from meshlib.pagination import decode_page_token, encode_page_token, filter_fingerprint
from meshlib.storage import CommitAndRaise, IdempotencyKey, Transactions
from services.account.answers import (
    CREATED_BATCH,
    FINISHED_BATCH,
    LEDGER_SCOPE,
    BatchAnswer,
    BatchItemResult,
    batch_create_fingerprint,
    batch_post_fingerprint,
)
from services.account.batches import (
    MAX_BATCH,
    Applied,
    FinishRequest,
    FinishRule,
    account_not_found,
    leg_refused,
    transfer_not_found,
)
from services.account.domain.ledger import (
    Account,
    AccountType,
    Transfer,
    TransferRequest,
    TransferType,
    bank_account,
    expire_transfer,
    new_transfer,
    post_transfer,
    void_transfer,
)
from services.account.repository import TransferFilter
from services.account.transfers import (
    audit_account,
    create_linked_transfers,
    create_transfers,
    finish_holds,
    finish_linked_holds,
    write_changes,
)
from services.account.unit_of_work import AccountUnitOfWork

log = logging.getLogger("services.account.ledger")

Clock = Callable[[], dt.datetime]
UowFactory = Callable[..., AccountUnitOfWork]


def utc_now() -> dt.datetime:
    """The wall clock, in UTC."""
    return dt.datetime.now(dt.UTC)


def validate_transfer_id(transfer_id: str, field: str) -> str:
    """A transfer id has the request_id shape (it is one)."""
    return validate_request_id(transfer_id, field)


def _checked_transfer(item: TransferRequest | MeshError) -> TransferRequest | MeshError:
    """A batch item whose shape passed CreateTransfer's checks, or the error it failed with."""
    if isinstance(item, MeshError):
        return item
    try:
        validate_transfer_id(item.transfer_id, "request_id")
        item.validate()
    except MeshError as error:
        return error
    return item


def _checked_finish(item: FinishRequest | MeshError) -> FinishRequest | MeshError:
    """A batch item whose key passed PostTransfer's check, or the error it failed with."""
    if isinstance(item, MeshError):
        return item
    try:
        validate_request_id(item.request_id)
    except MeshError as error:
        return error
    return item


def _check_batch_size(count: int, field: str, what: str) -> None:
    if not count:
        raise InvalidArgument.field(field, f"must hold at least one {what}")
    if count > MAX_BATCH:
        raise InvalidArgument.field(field, f"at most {MAX_BATCH} {what}s")


def _check_distinct_ids(items: Sequence[TransferRequest | MeshError], where: str) -> None:
    """FIELD_INVALID naming the first item whose transfer id an earlier item has."""
    seen: set[str] = set()
    for index, item in enumerate(items):
        if isinstance(item, TransferRequest) and item.transfer_id:
            if item.transfer_id in seen:
                raise InvalidArgument.field(f"requests[{index}].request_id", f"duplicate transfer id in {where}")
            seen.add(item.transfer_id)


def _check_distinct_holds(items: Sequence[FinishRequest | MeshError]) -> None:
    """FIELD_INVALID naming the first item that names a hold an earlier item names.

    Two finishes of one hold in one call is the caller's bug (the second could only fail or
    replay): refuse the call, as BatchCreateTransfers refuses a duplicate id.
    """
    seen: set[str] = set()
    for index, item in enumerate(items):
        if isinstance(item, FinishRequest):
            if item.transfer_id in seen:
                raise InvalidArgument.field(f"requests[{index}].name", "names a transfer another item names")
            seen.add(item.transfer_id)


def _only_answer(applied: Applied) -> Transfer:
    """A batch of one's answer, as the single rpc gives it: its transfer, or its error raised.

    A refusal rolls back, unless it changed something: touching an elapsed hold released it,
    which is kept (committed) before TRANSFER_EXPIRED is raised.
    """
    [answer] = applied.answers
    if isinstance(answer, MeshError):
        if applied.changed:
            raise CommitAndRaise(answer)
        raise answer
    return answer


def _failed(results: list[BatchItemResult]) -> int:
    return sum(1 for result in results if result.transfer is None)


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


class LedgerService:
    """Transfers: create (single-phase or hold), post, void, expire, read, batch, fund."""

    def __init__(self, uow: UowFactory, clock: Clock = utc_now) -> None:
        self._now = clock
        self._transactions = Transactions(uow, clock=clock)

    # ---- create ----

    async def create_transfer(self, request: TransferRequest) -> Transfer:
        """Create a transfer whose id is the request_id; a replay returns the existing one."""
        checked = _checked_transfer(request)
        if isinstance(checked, MeshError):  # before the database, as a batch refuses the item
            raise checked

        async def operation(uow: AccountUnitOfWork) -> tuple[Transfer, bool]:
            applied, _ = await create_transfers(uow, [checked], self._now)
            return _only_answer(applied), bool(applied.made)

        transfer, created = await self._transactions.run(operation)
        if created:
            log.info(
                "transfer created",
                extra={
                    "transfer": transfer.id,
                    "type": transfer.type.value,
                    "amount": Amount(transfer.currency, transfer.amount).format(),
                },
            )
        if transfer.is_due_to_expire(self._now()):
            # A replay touching an elapsed hold releases it and answers with its final state.
            transfer = await self.expire_one(transfer.id) or transfer
        return transfer

    async def batch_create(self, request_id: str, items: list[TransferRequest | MeshError]) -> list[BatchItemResult]:
        """Apply up to 500 transfers in order in one transaction, each as CreateTransfer would.

        An item may arrive already failed (a malformed request the converter refused): it
        gets its own error result like any other refused item.
        """
        validate_request_id(request_id)
        _check_batch_size(len(items), "requests", "transfer")
        _check_distinct_ids(items, "the batch")
        fingerprint = batch_create_fingerprint(items)
        # Shape errors are per item: they never reach the database.
        checked = [_checked_transfer(item) for item in items]

        async def operation(uow: AccountUnitOfWork) -> BatchAnswer:
            applied, now = await create_transfers(uow, checked, self._now)
            return BatchAnswer(applied.results(), frozenset(applied.made), now)

        answer = await self._transactions.run(
            operation,
            key=IdempotencyKey(LEDGER_SCOPE, "BatchCreateTransfers", request_id, fingerprint),
            codec=CREATED_BATCH,
        )
        if not answer.replayed:
            log.info("batch applied", extra={"items": len(answer.results), "failed": _failed(answer.results)})
            return answer.results

        def rebuilt(index: int) -> Transfer:
            request = checked[index]
            # The same payload (the fingerprint says so) made it then: the same transfer, at that time.
            assert isinstance(request, TransferRequest) and answer.at is not None
            return new_transfer(request, answer.at)

        return answer.filled(rebuilt)

    async def create_linked(self, request_id: str, legs: list[TransferRequest | MeshError]) -> list[Transfer]:
        """Create up to 500 transfers as one linked chain: every leg, in order, or none.

        A leg may arrive already failed (a malformed request the converter refused); a leg
        refused here or by the ledger's rules fails the whole chain with its own error and
        its index (:func:`~services.account.batches.leg_refused`), and nothing is written.
        The chain's request_id replays the first answer; a refusal saves none.
        """
        validate_request_id(request_id)
        _check_batch_size(len(legs), "requests", "transfer")
        _check_distinct_ids(legs, "the chain")
        checked: list[TransferRequest] = []
        for index, leg in enumerate(legs):
            shaped = _checked_transfer(leg)  # before the database, as CreateTransfer refuses it
            if isinstance(shaped, MeshError):
                raise leg_refused(index, shaped)
            checked.append(shaped)

        async def operation(uow: AccountUnitOfWork) -> BatchAnswer:
            applied, now = await create_linked_transfers(uow, checked, self._now)
            return BatchAnswer(applied.results(), frozenset(applied.made), now)

        answer = await self._transactions.run(
            operation,
            key=IdempotencyKey(LEDGER_SCOPE, "CreateLinkedTransfers", request_id, batch_create_fingerprint(checked)),
            codec=CREATED_BATCH,
        )
        if not answer.replayed:
            log.info("linked transfers created", extra={"legs": len(checked), "legs_new": len(answer.made)})
        assert answer.at is not None  # a chain's answer always has its time (format 2)
        at = answer.at
        # A replay rebuilds the legs the chain created: the same payload (the fingerprint says so), then.
        transfers = [result.transfer for result in answer.filled(lambda index: new_transfer(checked[index], at))]
        assert all(transfers), "a chain's answer holds every leg's transfer"
        return [transfer for transfer in transfers if transfer is not None]

    # ---- post / void / expire ----

    async def post_transfer(self, request_id: str, transfer_id: str) -> Transfer:
        """Post a hold's full amount; a replay with the same request_id returns the first answer."""
        return await self._finish("PostTransfer", request_id, transfer_id, post_transfer)

    async def void_transfer(self, request_id: str, transfer_id: str) -> Transfer:
        """Release a hold; a replay with the same request_id returns the first answer."""
        return await self._finish("VoidTransfer", request_id, transfer_id, void_transfer)

    async def _finish(self, method: str, request_id: str, transfer_id: str, rule: FinishRule) -> Transfer:
        item = _checked_finish(FinishRequest(request_id, transfer_id))
        if isinstance(item, MeshError):
            raise item

        async def operation(uow: AccountUnitOfWork) -> tuple[Transfer, bool]:
            applied, _ = await finish_holds(uow, method, [item], rule, self._now)
            return _only_answer(applied), bool(applied.made)

        transfer, finished = await self._transactions.run(operation)
        if finished:
            log.info("transfer finished", extra={"transfer": transfer_id, "state": transfer.state.value})
        return transfer

    async def batch_post(self, request_id: str, items: list[FinishRequest | MeshError]) -> list[BatchItemResult]:
        """Post up to 500 holds in order in one transaction, each exactly as PostTransfer would.

        Each item's request_id is PostTransfer's own key (same scope, method, fingerprint):
        an item replays an answer the single rpc saved, and saves one it will replay. An
        item may arrive already failed (a name the converter refused).
        """
        validate_request_id(request_id)
        _check_batch_size(len(items), "requests", "item")
        _check_distinct_holds(items)
        fingerprint = batch_post_fingerprint(items)
        # Shape errors are per item, as the single rpc refuses them before the database.
        checked = [_checked_finish(item) for item in items]

        async def operation(uow: AccountUnitOfWork) -> BatchAnswer:
            applied, now = await finish_holds(uow, "PostTransfer", checked, post_transfer, self._now)
            return BatchAnswer(applied.results(), frozenset(applied.made), now)

        answer = await self._transactions.run(
            operation,
            key=IdempotencyKey(LEDGER_SCOPE, "BatchPostTransfers", request_id, fingerprint),
            codec=FINISHED_BATCH,
        )
        if not answer.replayed:
            log.info(
                "batch finished",
                extra={"method": "PostTransfer", "items": len(answer.results), "failed": _failed(answer.results)},
            )
            return answer.results

        def hold_of(index: int) -> str:
            request = checked[index]
            assert isinstance(request, FinishRequest)  # the same payload finished it then
            return request.transfer_id

        # The holds the batch posted are final: read back (one SELECT), they are its answer still.
        rows = await self._transactions.read(lambda uow: uow.transfers.many(hold_of(index) for index in answer.made))
        return answer.filled(lambda index: rows[hold_of(index)])

    async def post_linked(self, request_id: str, items: list[FinishRequest | MeshError]) -> list[Transfer]:
        """Post up to 500 holds as one linked chain: every hold, in order, or none."""
        return await self._finish_linked("PostTransfer", "PostLinkedTransfers", request_id, items, post_transfer)

    async def void_linked(self, request_id: str, items: list[FinishRequest | MeshError]) -> list[Transfer]:
        """Void up to 500 holds as one linked chain: every hold, in order, or none."""
        return await self._finish_linked("VoidTransfer", "VoidLinkedTransfers", request_id, items, void_transfer)

    async def _finish_linked(
        self, method: str, chain_method: str, request_id: str, items: list[FinishRequest | MeshError], rule: FinishRule
    ) -> list[Transfer]:
        """A linked chain of ``method`` items (each under that rpc's own key), kept whole or not at all.

        An item may arrive already failed (a name the converter refused); an item refused here
        or by the ledger's rules fails the whole chain with its own error and its index
        (:func:`~services.account.batches.leg_refused`), and nothing is written. The chain's
        request_id replays the first answer; a refusal saves none.
        """
        validate_request_id(request_id)
        _check_batch_size(len(items), "requests", "item")
        _check_distinct_holds(items)
        checked: list[FinishRequest] = []
        for index, item in enumerate(items):
            shaped = _checked_finish(item)  # before the database, as the single rpc refuses it
            if isinstance(shaped, MeshError):
                raise leg_refused(index, shaped)
            checked.append(shaped)

        async def operation(uow: AccountUnitOfWork) -> BatchAnswer:
            applied, now = await finish_linked_holds(uow, method, checked, rule, self._now)
            return BatchAnswer(applied.results(), frozenset(applied.made), now)

        answer = await self._transactions.run(
            operation,
            key=IdempotencyKey(LEDGER_SCOPE, chain_method, request_id, batch_post_fingerprint(checked)),
            codec=FINISHED_BATCH,
        )
        results = answer.results
        if answer.replayed:
            # The holds the chain finished are final: read back (one SELECT), they are its answer still.
            made = [checked[index].transfer_id for index in answer.made]
            rows = await self._transactions.read(lambda uow: uow.transfers.many(made))
            results = answer.filled(lambda index: rows[checked[index].transfer_id])
        else:
            log.info("linked holds finished", extra={"method": method, "items": len(checked), "new": len(answer.made)})
        transfers = [result.transfer for result in results]
        assert all(transfers), "a chain's answer holds every item's transfer"
        return [transfer for transfer in transfers if transfer is not None]

    async def expire_one(self, transfer_id: str) -> Transfer | None:
        """Release one hold if its timeout has elapsed; returns the transfer as it is now."""
        transfer, _ = await self._expire(transfer_id)
        return transfer

    async def _expire(self, transfer_id: str) -> tuple[Transfer | None, bool]:
        """The transfer as it is now, and whether this call released it (another replica's
        sweep, or a post or void, may have got there first: the row lock decides)."""

        async def operation(uow: AccountUnitOfWork) -> tuple[Transfer | None, bool]:
            transfer = await uow.transfers.get(transfer_id, lock=True)
            if transfer is None or not transfer.is_due_to_expire(self._now()):
                return transfer, False
            locked = await uow.accounts.lock([transfer.debit_account_id, transfer.credit_account_id])
            debit, credit = locked[transfer.debit_account_id], locked[transfer.credit_account_id]
            now = self._now()
            outcome = expire_transfer(transfer, debit, credit, now)
            await write_changes(uow, Applied(changed=[outcome], touched={debit.id: debit, credit.id: credit}), now)
            return outcome.transfer, True

        transfer, expired = await self._transactions.run(operation)
        if expired:
            log.info("hold expired", extra={"transfer": transfer_id})
        return transfer, expired

    async def expire_due(self, limit: int = 200) -> int:
        """Release every hold whose timeout has elapsed (up to ``limit``); returns how many this
        call released (several replicas may sweep at once: each hold is released by one)."""
        due = await self._transactions.read(lambda uow: uow.transfers.due_for_expiry(self._now(), limit))
        released = 0
        for transfer_id in due:
            _, expired = await self._expire(transfer_id)
            released += expired
        return released

    async def purge_old_records(self, *, consent_read_days: int = 2) -> int:
        """Forget idempotency answers past their retention and old daily read counters.

        Transfer ids are never purged: the transfers table keeps them forever.
        """
        now = self._now()

        async def operation(uow: AccountUnitOfWork) -> int:
            purged = await uow.idempotency.purge(now - IDEMPOTENCY_RETENTION)
            return purged + await uow.consent_reads.purge(now.date() - dt.timedelta(days=consent_read_days))

        return await self._transactions.run(operation)

    # ---- reads ----

    async def get_account(self, account_id: str) -> Account:
        """One account as the ledger knows it (for the mesh's own services)."""
        [answer] = await self._accounts([account_id])
        if isinstance(answer, MeshError):
            raise answer
        return answer

    async def batch_get_accounts(self, items: list[str | MeshError]) -> list[AccountItemResult]:
        """Up to 500 accounts in one read, each item answered exactly as :meth:`get_account` would.

        An item is an account id, or the error its malformed name already failed with (the
        converter's, as GetLedgerAccount's). Duplicates are allowed: each gets its own result.
        """
        _check_batch_size(len(items), "names", "name")
        results = []
        for index, answer in enumerate(await self._accounts(items)):
            if isinstance(answer, MeshError):
                results.append(AccountItemResult(index, None, answer.reason, answer.message))
            else:
                results.append(AccountItemResult(index, answer))
        return results

    async def _accounts(self, items: Sequence[str | MeshError]) -> list[Account | MeshError]:
        """Each item's account or error; the distinct ids read with one SELECT in one read-only unit of work."""
        account_ids = {item for item in items if not isinstance(item, MeshError)}
        found: dict[str, Account] = {}
        if account_ids:
            found = await self._transactions.read(lambda uow: uow.accounts.many(account_ids))
        return [item if isinstance(item, MeshError) else found.get(item) or account_not_found(item) for item in items]

    async def get_transfer(self, transfer_id: str) -> Transfer:
        """One transfer (an elapsed hold is released on the way)."""
        transfer = await self._transactions.read(lambda uow: uow.transfers.get(transfer_id))
        if transfer is None:
            raise transfer_not_found(transfer_id)
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
        rows = await self._transactions.read(lambda uow: uow.transfers.page(filters, after, size + 1))
        next_token = ""
        if len(rows) > size:
            rows = rows[:size]
            last = rows[-1]
            next_token = encode_page_token({"t": last.created_at.isoformat(), "id": last.id}, filters_hash)
        return TransferPage(rows, next_token)

    # ---- funding from the bank's equity ----

    async def ensure_equity_account(self, currency: str) -> str:
        """The bank equity account of ``currency``, opened on first use; returns its id."""

        async def operation(uow: AccountUnitOfWork) -> tuple[str, bool]:
            existing = await uow.accounts.equity_id(currency)
            if existing is not None:
                return existing, False
            now = self._now()
            account = bank_account(
                f"equity-{currency.lower()}-{uuid.uuid4().hex[:12]}",
                currency,
                AccountType.BANK_EQUITY,
                f"Bank equity {currency}",
                now,
            )
            await uow.accounts.add(account)
            audit_account(uow, "account.open", account)
            return account.id, True

        account_id, opened = await self._transactions.run(operation)
        if opened:
            log.info("bank equity account opened", extra={"currency": currency, "account": account_id})
        return account_id

    async def fund_account(self, request_id: str, account_id: str, amount: Amount, description: str) -> Transfer:
        """Credit an account from its currency's bank equity account (a single-phase transfer)."""
        validate_transfer_id(request_id, "request_id")
        account = await self.get_account(account_id)
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
