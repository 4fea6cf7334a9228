"""BatchCreateTransfers' and BatchPostTransfers' set-based paths on the real stores (SQLite and PostgreSQL).

The batch locks its accounts once, looks up every id once, applies the rules in memory and
writes each table once. These tests pin what that must not change: each item sees the
balances the earlier items of the same batch left (and a refused item changes nothing),
per-item results in order, replays of older transfers, shape errors per item, the saved
answer (both formats) for a replayed request id, and ordered locks under concurrency. A batch
of posts must answer and change exactly what its items would through PostTransfer one by one,
and share each item's key with it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

import pytest

from meshlib.errors import AlreadyExists, InvalidArgument, MeshError
from meshlib.money import Amount
from meshlib.storage import Database
from meshlib.storage.migrations import upgrade_to_head
from services.account.admin_service import AccountAdminService
from services.account.answers import LEDGER_SCOPE, BatchItemResult, request_fingerprint
from services.account.batches import FinishRequest
from services.account.bootstrap import VERSIONS_DIR
from services.account.domain.ledger import (
    AccountType,
    OpenAccountCommand,
    Transfer,
    TransferRequest,
    TransferState,
    TransferType,
)
from services.account.ledger_service import LedgerService
from services.account.repository import TransferFilter
from services.account.unit_of_work import AccountUnitOfWork
from tests.integration.account.harness import SettableClock

# name -> (currency, type, overdraft)
ACCOUNTS = {
    "alice": ("EUR", AccountType.CURRENT, 0),
    "bob": ("EUR", AccountType.CURRENT, 100),
    "carol": ("EUR", AccountType.SAVINGS, 0),
    "frozen": ("EUR", AccountType.CURRENT, 0),
    "george": ("GBP", AccountType.CURRENT, 0),
}


@dataclass
class Ledger:
    service: LedgerService
    admin: AccountAdminService
    database: Database
    clock: SettableClock


@pytest.fixture
async def ledger(database_url: str) -> AsyncIterator[Ledger]:
    database = Database(database_url)
    await upgrade_to_head(database, VERSIONS_DIR, "account")
    clock = SettableClock(dt.datetime(2026, 6, 1, 9, 30, 15, 123456, tzinfo=dt.UTC))
    uow = partial(AccountUnitOfWork, database)
    service = LedgerService(uow, clock=clock)
    try:
        yield Ledger(service, AccountAdminService(uow, service, clock=clock), database, clock)
    finally:
        await database.dispose()


async def open_set(ledger: Ledger, prefix: str) -> dict[str, str]:
    """One set of the ACCOUNTS (alice funded 1,000, george GBP 500, frozen frozen); name -> id."""
    ids = {}
    for name, (currency, kind, overdraft) in ACCOUNTS.items():
        account = await ledger.admin.open_account(
            OpenAccountCommand(
                request_id=f"{prefix}-open-{name}",
                customer_id=None if kind is AccountType.SETTLEMENT else f"{prefix}-{name}",
                currency=currency,
                type=kind,
                overdraft_limit=Amount(currency, overdraft) if overdraft else None,
                display_name=name,
            )
        )
        ids[name] = account.id
    await ledger.service.fund_account(f"{prefix}-fund-alice", ids["alice"], Amount("EUR", 1_000), "")
    await ledger.service.fund_account(f"{prefix}-fund-george", ids["george"], Amount("GBP", 500), "")
    await ledger.service.fund_account(f"{prefix}-fund-frozen", ids["frozen"], Amount("EUR", 50), "")
    await ledger.admin.freeze_account(f"{prefix}-freeze", ids["frozen"])
    return ids


def request(
    prefix: str,
    ids: dict[str, str],
    key: str,
    debit: str,
    credit: str,
    amount: int,
    *,
    currency: str = "EUR",
    hold: bool = False,
    reference: str = "",
) -> TransferRequest:
    return TransferRequest(
        transfer_id=f"{prefix}-{key}",
        debit_account_id=ids.get(debit, debit),
        credit_account_id=ids.get(credit, credit),
        amount=Amount(currency, amount),
        type=TransferType.PENDING if hold else TransferType.SINGLE_PHASE,
        timeout=dt.timedelta(seconds=30) if hold else None,
        reference=reference,
    )


def plan(prefix: str, ids: dict[str, str]) -> list[TransferRequest | MeshError]:
    """A batch whose items depend on each other's effects, in order."""
    r = partial(request, prefix, ids)
    return [
        # Before the batch: alice 980, bob 20 (the two older transfers of 10).
        r("t0", "alice", "bob", 600),  # alice 980 -> 380, bob 620
        r("t1", "alice", "bob", 600),  # INSUFFICIENT_FUNDS: only because t0 came first
        r("t2", "bob", "carol", 650),  # bob 620 + overdraft 100 covers it: bob -> -30
        r("t3", "bob", "carol", 71),  # INSUFFICIENT_FUNDS: 1 over bob's overdraft after t2
        r("t4", "carol", "alice", 300, hold=True),  # a hold: carol spendable 650 -> 350
        r("t5", "carol", "bob", 351),  # INSUFFICIENT_FUNDS because of the hold t4
        r("t6", "carol", "bob", 350),  # exactly what the hold left
        r("t7", "alice", "alice", 1),  # SAME_ACCOUNT (a shape error, per item)
        r("t8", "alice", "bob", 0),  # FIELD_INVALID (a shape error, per item)
        InvalidArgument.field("amount", "refused by the converter"),  # arrived already failed
        r("t9", "alice", "george", 1),  # CURRENCY_MISMATCH
        r("t10", "alice", "frozen", 1),  # ACCOUNT_NOT_ACTIVE
        r("t11", "alice", "nobody", 1),  # account not found
        r("old-same", "alice", "bob", 10),  # replay of an older transfer: answered, not applied again
        r("old-diff", "alice", "bob", 11),  # same id as an older transfer, other fields: refused
        r("t12", "george", "alice", 5, currency="EUR"),  # CURRENCY_MISMATCH (amount vs accounts)
        r("t13", "alice", "bob", 380, reference="drains alice"),  # exactly what t0 left alice
    ]


async def prepare_older_transfers(ledger: Ledger, prefix: str, ids: dict[str, str]) -> None:
    await ledger.service.create_transfer(request(prefix, ids, "old-same", "alice", "bob", 10))
    await ledger.service.create_transfer(request(prefix, ids, "old-diff", "alice", "bob", 10))


def outcome_of(result: BatchItemResult, ids: dict[str, str], prefix: str) -> tuple[object, ...]:
    """A result with the set's ids replaced by names, comparable across two account sets."""
    if result.transfer is None:
        return ("refused", result.error_reason)
    names = {account_id: name for name, account_id in ids.items()}
    t = result.transfer
    return (
        "ok",
        t.id.removeprefix(f"{prefix}-"),
        names[t.debit_account_id],
        names[t.credit_account_id],
        t.amount,
        t.currency,
        t.type,
        t.state,
        t.reference,
    )


async def one_by_one(ledger: Ledger, items: list[TransferRequest | MeshError]) -> list[BatchItemResult]:
    results = []
    for index, item in enumerate(items):
        try:
            if isinstance(item, MeshError):
                raise item
            results.append(BatchItemResult(index, await ledger.service.create_transfer(item)))
        except MeshError as error:
            results.append(BatchItemResult(index, None, error.reason, error.message))
    return results


async def account_states(ledger: Ledger, ids: dict[str, str]) -> dict[str, tuple[object, ...]]:
    """Totals and statement lines of each account of a set, by name."""
    states = {}
    async with AccountUnitOfWork(ledger.database, read_only=True) as uow:
        for name, account_id in ids.items():
            account = await uow.accounts.get(account_id)
            assert account is not None
            lines = await uow.entries.page(account_id, from_time=None, to_time=None, after=None, limit=1_000)
            states[name] = (
                account.debits_posted,
                account.credits_posted,
                account.debits_pending,
                account.credits_pending,
                account.last_entry_seq,
                sorted((e.seq, e.direction, e.amount, e.status) for e in lines),
            )
    return states


async def test_a_batch_equals_its_items_applied_one_by_one(ledger: Ledger) -> None:
    batch_ids, single_ids = await open_set(ledger, "b"), await open_set(ledger, "s")
    await prepare_older_transfers(ledger, "b", batch_ids)
    await prepare_older_transfers(ledger, "s", single_ids)

    batched = await ledger.service.batch_create("batch-1", plan("b", batch_ids))
    singles = await one_by_one(ledger, plan("s", single_ids))

    assert [r.index for r in batched] == list(range(len(batched)))
    assert [outcome_of(r, batch_ids, "b") for r in batched] == [outcome_of(r, single_ids, "s") for r in singles]
    reasons = [r.error_reason for r in batched]
    assert reasons == [
        None,
        "INSUFFICIENT_FUNDS",
        None,
        "INSUFFICIENT_FUNDS",
        None,
        "INSUFFICIENT_FUNDS",
        None,
        "SAME_ACCOUNT",
        "FIELD_INVALID",
        "FIELD_INVALID",
        "CURRENCY_MISMATCH",
        "ACCOUNT_NOT_ACTIVE",
        "RESOURCE_NOT_FOUND",
        None,
        "TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS",
        "CURRENCY_MISMATCH",
        None,
    ]
    # The replayed older transfer is answered as it is, not applied a second time.
    assert batched[13].transfer is not None and batched[13].transfer.amount == 10
    assert await account_states(ledger, batch_ids) == await account_states(ledger, single_ids)
    async with AccountUnitOfWork(ledger.database, read_only=True) as uow:
        totals = await uow.accounts.totals()
    assert all(t.balanced for t in totals)


async def test_a_replayed_batch_answers_its_first_answer(ledger: Ledger) -> None:
    ids = await open_set(ledger, "r")
    await prepare_older_transfers(ledger, "r", ids)
    ledger.clock.now += dt.timedelta(seconds=1)  # the older transfers' times differ from the batch's
    items = plan("r", ids)
    first = await ledger.service.batch_create("batch-r", items)
    before = await account_states(ledger, ids)
    # The hold of the batch moves on; a replay still answers what the batch did then.
    await ledger.service.post_transfer("post-t4", "r-t4")
    ledger.clock.now += dt.timedelta(seconds=5)
    again = await ledger.service.batch_create("batch-r", plan("r", ids))
    assert again == first
    assert again[4].transfer is not None and again[4].transfer.state is TransferState.PENDING
    after = await account_states(ledger, ids)
    assert after["carol"][0] == before["carol"][0] + 300  # only the post changed anything
    with pytest.raises(AlreadyExists) as caught:
        await ledger.service.batch_create("batch-r", plan("r", ids)[:-1])
    assert caught.value.reason == "REQUEST_ID_REUSED"


async def test_an_answer_saved_in_the_first_format_is_still_replayed(ledger: Ledger) -> None:
    ids = await open_set(ledger, "f")
    items: list[TransferRequest | MeshError] = [
        request("f", ids, "x1", "alice", "bob", 5, hold=True, reference="ref"),
        InvalidArgument.field("amount", "bad"),
    ]
    # The fingerprint as the code before the set-based batch computed it (dataclasses.asdict).
    legacy = request_fingerprint(requests=[str(i) if isinstance(i, MeshError) else i for i in items])
    transfer = Transfer(
        id="f-x1",
        debit_account_id=ids["alice"],
        credit_account_id=ids["bob"],
        amount=5,
        currency="EUR",
        type=TransferType.PENDING,
        state=TransferState.PENDING,
        timeout=dt.timedelta(seconds=30),
        expires_at=ledger.clock.now + dt.timedelta(seconds=30),
        reference="ref",
        description="",
        created_at=ledger.clock.now,
        updated_at=ledger.clock.now,
    )
    saved = [
        BatchItemResult(0, transfer),
        BatchItemResult(1, None, "FIELD_INVALID", "bad"),
    ]
    # Format 1 as it was saved: every result whole (Transfer.to_dict has not changed since).
    format_1 = [
        {"index": 0, "transfer": transfer.to_dict(), "error_reason": None, "error_message": ""},
        {"index": 1, "transfer": None, "error_reason": "FIELD_INVALID", "error_message": "bad"},
    ]
    async with AccountUnitOfWork(ledger.database) as uow:
        await uow.idempotency.save(
            LEDGER_SCOPE, "BatchCreateTransfers", "batch-f", legacy, json.dumps(format_1).encode(), ledger.clock.now
        )
        await uow.commit()
    assert await ledger.service.batch_create("batch-f", items) == saved


async def test_concurrent_batches_over_the_same_accounts_in_opposite_orders(ledger: Ledger) -> None:
    ids = await open_set(ledger, "c")
    for name in ("bob", "carol"):
        await ledger.service.fund_account(f"c-fund-{name}", ids[name], Amount("EUR", 1_000), "")
    ring = ["alice", "bob", "carol"]

    def batch(n: int) -> list[TransferRequest | MeshError]:
        order = ring if n % 2 else ring[::-1]
        return [request("c", ids, f"{n}-{k}", order[k % 3], order[(k + 1) % 3], 1 + k % 7) for k in range(60)]

    results = await asyncio.gather(*(ledger.service.batch_create(f"batch-c{n}", batch(n)) for n in range(6)))
    accepted = sum(1 for batch_results in results for r in batch_results if r.error_reason is None)
    assert accepted == 6 * 60
    async with AccountUnitOfWork(ledger.database, read_only=True) as uow:
        totals = await uow.accounts.totals()
        accounts = {a.id: a for a in await uow.accounts.all()}
    assert all(t.balanced for t in totals)
    # 3 funding transfers + every batch item touched its two accounts once each.
    assert sum(accounts[ids[name]].last_entry_seq for name in ring) == 2 * 6 * 60 + 3


async def test_concurrent_batches_answer_as_if_applied_one_after_another(ledger: Ledger) -> None:
    """Whatever order the store serialises them in, each answer is one a sequential order gives."""
    ids = await open_set(ledger, "g")
    r = partial(request, "g", ids)
    first = [r("x1", "alice", "bob", 900)]
    g1, g2, g3, g1_again = await asyncio.gather(
        ledger.service.batch_create("batch-g1", first),
        ledger.service.batch_create("batch-g2", [r("x2", "alice", "bob", 100)]),  # 900 + 100: alice's 1,000
        # The same transfer id as batch-g1's, same fields: one creates it, the other replays it.
        ledger.service.batch_create("batch-g3", [r("x1", "alice", "bob", 900), r("x3", "bob", "carol", 1)]),
        # The same request id as batch-g1, same payload: one answer for both.
        ledger.service.batch_create("batch-g1", first),
    )
    assert [x.error_reason for x in g1] == [None] and [x.error_reason for x in g2] == [None]
    assert [x.error_reason for x in g3] == [None, None] and g3[0].transfer == g1[0].transfer
    assert g1_again == g1
    refused = await ledger.service.batch_create("batch-g4", [r("x1", "alice", "bob", 901)])
    assert [x.error_reason for x in refused] == ["TRANSFER_EXISTS_WITH_DIFFERENT_FIELDS"]
    with pytest.raises(AlreadyExists) as caught:
        await ledger.service.batch_create("batch-g1", [r("x9", "alice", "bob", 1)])
    assert caught.value.reason == "REQUEST_ID_REUSED"
    states = await account_states(ledger, ids)
    assert states["alice"][:2] == (1_000, 1_000) and states["bob"][:2] == (1, 1_000)


# ---- BatchPostTransfers ----


async def prepare_holds(ledger: Ledger, prefix: str, ids: dict[str, str]) -> None:
    """Holds and transfers for :func:`post_plan`, made the same way on every account set."""
    r = partial(request, prefix, ids)
    for key, debit, credit, amount in (
        ("h1", "alice", "bob", 300),
        ("h2", "alice", "carol", 200),
        ("h3", "alice", "bob", 100),
        ("h4", "alice", "bob", 50),
        ("h5", "alice", "bob", 25),
        ("h6", "alice", "carol", 10),
        ("h7", "alice", "bob", 5),
        ("h8", "bob", "alice", 1),
        ("h9", "alice", "bob", 2),
    ):
        await ledger.service.create_transfer(r(key, debit, credit, amount, hold=True))
    await ledger.service.create_transfer(r("single", "alice", "bob", 1))
    # Short holds, due by the time the batch runs (the others last 30 seconds); short2 is swept.
    for key, amount in (("short", 40), ("short2", 20)):
        await ledger.service.create_transfer(
            TransferRequest(
                f"{prefix}-{key}", ids["alice"], ids["bob"], Amount("EUR", amount), TransferType.PENDING, SHORT
            )
        )
    await ledger.service.void_transfer(f"{prefix}-void-h3", f"{prefix}-h3")
    await ledger.service.post_transfer(f"{prefix}-post-h4", f"{prefix}-h4")  # replayed by the batch
    await ledger.service.post_transfer(f"{prefix}-post-h5", f"{prefix}-h5")  # posted under another key
    await ledger.service.post_transfer(f"{prefix}-post-h7", f"{prefix}-h7")  # its key is reused for h9
    await ledger.admin.freeze_account(f"{prefix}-freeze-carol", ids["carol"])  # h6: ACCOUNT_NOT_ACTIVE


async def let_short_holds_elapse(ledger: Ledger, *prefixes: str) -> None:
    """Move past the short holds' timeout (once for every set: they share the clock); sweep short2."""
    ledger.clock.now += dt.timedelta(seconds=5)
    for prefix in prefixes:
        await ledger.service.expire_one(f"{prefix}-short2")


SHORT = dt.timedelta(seconds=2)


def post_plan(prefix: str) -> list[FinishRequest | MeshError]:
    """Posts covering every answer PostTransfer gives, in an order where items affect each other."""

    def p(key: str, transfer: str) -> FinishRequest:
        return FinishRequest(f"{prefix}-{key}", f"{prefix}-{transfer}")

    return [
        p("k1", "h1"),
        p("k2", "nothing"),  # RESOURCE_NOT_FOUND
        p("k3", "h3"),  # TRANSFER_ALREADY_VOIDED
        p("post-h4", "h4"),  # PostTransfer's key, same transfer: its first answer
        p("k5", "h5"),  # TRANSFER_ALREADY_POSTED
        p("k6", "h6"),  # ACCOUNT_NOT_ACTIVE (carol is frozen)
        p("k7", "single"),  # TRANSFER_NOT_PENDING
        p("post-h7", "h9"),  # PostTransfer's key, another transfer: REQUEST_ID_REUSED
        p("k8", "short"),  # TRANSFER_EXPIRED, and the hold is released
        p("k1", "h2"),  # k1 was saved by item 0 of this batch: REQUEST_ID_REUSED
        p("k6", "h8"),  # item 5 failed, so k6 was never saved: posted
        FinishRequest("bad id!", f"{prefix}-h1-again"),  # FIELD_INVALID
        InvalidArgument.field("name", "refused by the converter"),  # arrived already failed
        p("k9", "short2"),  # swept before: TRANSFER_EXPIRED from the rule
    ]


async def posts_one_by_one(ledger: Ledger, items: list[FinishRequest | MeshError]) -> list[BatchItemResult]:
    results = []
    for index, item in enumerate(items):
        try:
            if isinstance(item, MeshError):
                raise item
            results.append(
                BatchItemResult(index, await ledger.service.post_transfer(item.request_id, item.transfer_id))
            )
        except MeshError as error:
            results.append(BatchItemResult(index, None, error.reason, error.message))
    return results


async def transfer_states(ledger: Ledger, prefix: str) -> dict[str, tuple[object, ...]]:
    async with AccountUnitOfWork(ledger.database, read_only=True) as uow:
        rows = await uow.transfers.page(TransferFilter(), None, 1_000)
    return {t.id.removeprefix(f"{prefix}-"): (t.state, t.updated_at) for t in rows if t.id.startswith(f"{prefix}-")}


async def test_a_batch_of_posts_equals_its_items_posted_one_by_one(ledger: Ledger) -> None:
    batch_ids, single_ids = await open_set(ledger, "pb"), await open_set(ledger, "ps")
    await prepare_holds(ledger, "pb", batch_ids)
    await prepare_holds(ledger, "ps", single_ids)
    await let_short_holds_elapse(ledger, "pb", "ps")

    batched = await ledger.service.batch_post("post-batch-1", post_plan("pb"))
    singles = await posts_one_by_one(ledger, post_plan("ps"))

    assert [r.index for r in batched] == list(range(len(batched)))
    assert [outcome_of(r, batch_ids, "pb") for r in batched] == [outcome_of(r, single_ids, "ps") for r in singles]
    assert [r.error_reason for r in batched] == [
        None,
        "RESOURCE_NOT_FOUND",
        "TRANSFER_ALREADY_VOIDED",
        None,
        "TRANSFER_ALREADY_POSTED",
        "ACCOUNT_NOT_ACTIVE",
        "TRANSFER_NOT_PENDING",
        "REQUEST_ID_REUSED",
        "TRANSFER_EXPIRED",
        "REQUEST_ID_REUSED",
        None,
        "FIELD_INVALID",
        "FIELD_INVALID",
        "TRANSFER_EXPIRED",
    ]
    # The replayed key answers PostTransfer's first answer (posted before the clock moved).
    assert batched[3].transfer is not None and batched[3].transfer.updated_at < ledger.clock.now
    assert await account_states(ledger, batch_ids) == await account_states(ledger, single_ids)
    assert await transfer_states(ledger, "pb") == await transfer_states(ledger, "ps")
    assert (await transfer_states(ledger, "pb"))["short"][0] is TransferState.EXPIRED
    async with AccountUnitOfWork(ledger.database, read_only=True) as uow:
        totals = await uow.accounts.totals()
    assert all(t.balanced for t in totals)


async def test_a_replayed_batch_of_posts_answers_its_first_answer(ledger: Ledger) -> None:
    ids = await open_set(ledger, "pr")
    await prepare_holds(ledger, "pr", ids)
    await let_short_holds_elapse(ledger, "pr")
    first = await ledger.service.batch_post("post-batch-r", post_plan("pr"))
    before = await account_states(ledger, ids)
    ledger.clock.now += dt.timedelta(minutes=5)  # every hold left is due now: a replay must not touch them
    again = await ledger.service.batch_post("post-batch-r", post_plan("pr"))
    assert again == first
    assert await account_states(ledger, ids) == before
    with pytest.raises(AlreadyExists) as caught:
        await ledger.service.batch_post("post-batch-r", post_plan("pr")[:-1])
    assert caught.value.reason == "REQUEST_ID_REUSED"
    # The answer is saved compactly: the posts of the batch are not copied into it.
    async with AccountUnitOfWork(ledger.database, read_only=True) as uow:
        saved = await uow.idempotency.lookup_many(LEDGER_SCOPE, "BatchPostTransfers", ["post-batch-r"])
    kinds = [entry[0] for entry in json.loads(saved["post-batch-r"].response)["results"]]
    assert kinds == ["f", "e", "e", "t", "e", "e", "e", "e", "e", "e", "f", "e", "e", "e"]


async def test_an_item_key_is_post_transfer_key_both_ways(ledger: Ledger) -> None:
    ids = await open_set(ledger, "pk")
    r = partial(request, "pk", ids)
    for key in ("a", "b", "c"):
        await ledger.service.create_transfer(r(key, "alice", "bob", 100, hold=True))
    posted = await ledger.service.batch_post("pk-batch", [FinishRequest("pk-key-a", "pk-a")])
    # The saga's recovery replays the item through PostTransfer: the batch's answer, once.
    ledger.clock.now += dt.timedelta(seconds=3)
    assert await ledger.service.post_transfer("pk-key-a", "pk-a") == posted[0].transfer
    with pytest.raises(AlreadyExists):
        await ledger.service.post_transfer("pk-key-a", "pk-b")
    # And the other way round: a post made through PostTransfer, replayed through a batch.
    single = await ledger.service.post_transfer("pk-key-b", "pk-b")
    replayed = await ledger.service.batch_post(
        "pk-batch-2", [FinishRequest("pk-key-b", "pk-b"), FinishRequest("pk-key-b", "pk-c")]
    )
    assert replayed[0] == BatchItemResult(0, single)
    assert replayed[1].error_reason == "REQUEST_ID_REUSED"
    states = await account_states(ledger, ids)
    assert states["alice"][:4] == (200, 1_000, 100, 0)  # two posts of 100, c still held


async def test_concurrent_batches_and_single_posts_post_each_hold_once(ledger: Ledger) -> None:
    ids = await open_set(ledger, "pc")
    for name in ("bob", "carol"):
        await ledger.service.fund_account(f"pc-fund-{name}", ids[name], Amount("EUR", 1_000), "")
    ring = ["alice", "bob", "carol"]
    holds = [f"pc-h{k}" for k in range(30)]
    for k in range(len(holds)):
        await ledger.service.create_transfer(
            request("pc", ids, f"h{k}", ring[k % 3], ring[(k + 1) % 3], 1 + k % 5, hold=True)
        )

    def batch(n: int) -> list[FinishRequest | MeshError]:
        order = holds if n % 2 else holds[::-1]
        return [FinishRequest(f"pc-b{n}-{hold}", hold) for hold in order]

    answers = await asyncio.gather(
        *(ledger.service.batch_post(f"pc-batch-{n}", batch(n)) for n in range(4)),
        # A twin of batch 0 (same request id, same payload): one answer for both.
        ledger.service.batch_post("pc-batch-0", batch(0)),
        *(ledger.service.post_transfer(f"pc-single-{hold}", hold) for hold in holds[::3]),
        return_exceptions=True,
    )
    batches, twin, singles = answers[:4], answers[4], answers[5:]
    assert twin == batches[0]
    posted: dict[str, int] = {hold: 0 for hold in holds}
    for results in batches:
        assert isinstance(results, list), results
        for result in results:
            if result.transfer is not None:
                posted[result.transfer.id] += 1
            else:
                assert result.error_reason == "TRANSFER_ALREADY_POSTED", result
    for hold, single in zip(holds[::3], singles, strict=True):
        if isinstance(single, Transfer):
            posted[hold] += 1
        else:
            assert isinstance(single, MeshError) and single.reason == "TRANSFER_ALREADY_POSTED", single
    assert set(posted.values()) == {1}
    async with AccountUnitOfWork(ledger.database, read_only=True) as uow:
        totals = await uow.accounts.totals()
        accounts = {a.id: a for a in await uow.accounts.all()}
    assert all(t.balanced for t in totals)
    assert all(accounts[ids[name]].debits_pending == 0 for name in ring)


async def test_idempotency_keys_saved_and_looked_up_set_based(ledger: Ledger) -> None:
    now = ledger.clock.now
    async with AccountUnitOfWork(ledger.database) as uow:
        await uow.idempotency.save_many("s", "M", [("k1", "f1", b"one"), ("k2", "f2", b"\x00two")], now)
        await uow.commit()
    async with AccountUnitOfWork(ledger.database) as uow:
        found = await uow.idempotency.lookup_many("s", "M", ["k2", "k1", "k3", "k1"])
        assert sorted(found) == ["k1", "k2"] and found["k2"].answer_for("f2") == b"\x00two"
        assert await uow.idempotency.lookup("s", "M", "k1", "f1") == b"one"  # the single lookup sees them
        assert await uow.idempotency.lookup_many("s", "other", ["k1"]) == {}
        assert await uow.idempotency.lookup_many("s", "M", []) == {}
        with pytest.raises(AlreadyExists) as caught:
            found["k1"].answer_for("changed")
        assert caught.value.reason == "REQUEST_ID_REUSED"
        assert await uow.idempotency.purge(now + dt.timedelta(seconds=1)) == 2
