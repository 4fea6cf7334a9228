"""BatchGetLedgerAccounts' rules and converters with a fake unit of work (no database, no gRPC)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from meshlib.errors import InvalidArgument, MeshError
from openbank.common.v1 import error_reason_pb2 as er
from services.account import converters
from services.account.domain.ledger import Account
from services.account.ledger_service import AccountItemResult, LedgerService
from tests.unit.account.samples import sample_account

NOW = dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)


def account(account_id: str) -> Account:
    return sample_account(account_id, at=NOW)


class FakeUnitOfWork:
    """Records each unit of work (its read_only) and each read, batch and single."""

    def __init__(self, accounts: list[Account]) -> None:
        self.stored = {a.id: a for a in accounts}
        self.opened: list[bool] = []  # read_only of each unit of work
        self.reads: list[set[str]] = []
        self.gets: list[str] = []
        outer = self

        class Accounts:
            async def get(self, account_id: str) -> Account | None:
                outer.gets.append(account_id)
                return outer.stored.get(account_id)

            async def many(self, ids: Any) -> dict[str, Account]:
                wanted = set(ids)
                outer.reads.append(wanted)
                return {i: outer.stored[i] for i in wanted if i in outer.stored}

        self.accounts = Accounts()

    def __call__(self, *, read_only: bool = False) -> FakeUnitOfWork:
        self.opened.append(read_only)
        return self

    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


async def test_items_in_request_order_from_one_read_of_the_distinct_ids() -> None:
    uow = FakeUnitOfWork([account("a1"), account("a2")])
    service = LedgerService(uow)  # type: ignore[arg-type]
    malformed = InvalidArgument.field("name", "must look like accounts/{id}")
    results = await service.batch_get_accounts(["a2", "nope", malformed, "a1", "a2", "nope"])
    assert [(r.index, r.account.id if r.account else None, r.error_reason) for r in results] == [
        (0, "a2", None),
        (1, None, "RESOURCE_NOT_FOUND"),
        (2, None, "FIELD_INVALID"),
        (3, "a1", None),
        (4, "a2", None),
        (5, None, "RESOURCE_NOT_FOUND"),
    ]
    assert results[2].error_message == malformed.message
    assert results[1].error_message == "account not found"
    assert uow.opened == [True] and uow.reads == [{"a1", "a2", "nope"}] and uow.gets == []


async def test_an_unknown_item_fails_as_get_account_does() -> None:
    service = LedgerService(FakeUnitOfWork([]))  # type: ignore[arg-type]
    [result] = await service.batch_get_accounts(["ghost"])
    with pytest.raises(MeshError) as single:
        await service.get_account("ghost")
    assert (result.error_reason, result.error_message) == (single.value.reason, single.value.message)


async def test_only_malformed_names_touch_no_database() -> None:
    uow = FakeUnitOfWork([])
    service = LedgerService(uow)  # type: ignore[arg-type]
    bad = InvalidArgument.field("name", "must look like accounts/{id}")
    results = await service.batch_get_accounts([bad, bad])
    assert [r.error_reason for r in results] == ["FIELD_INVALID", "FIELD_INVALID"]
    assert uow.opened == []


@pytest.mark.parametrize("count", [0, 501])
async def test_whole_call_errors_name_names(count: int) -> None:
    uow = FakeUnitOfWork([])
    service = LedgerService(uow)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument) as caught:
        await service.batch_get_accounts([f"a{i}" for i in range(count)])
    assert caught.value.reason == "FIELD_INVALID"
    assert [v.field for v in caught.value.violations] == ["names"]
    assert uow.opened == []


def test_names_convert_to_ids_or_get_ledger_account_s_own_error() -> None:
    items = converters.account_ids_or_errors(["accounts/a-1", "a-1", "accounts/", "accounts/a-1"])
    assert items[0] == "a-1" and items[3] == "a-1"
    for bad, name in ((items[1], "a-1"), (items[2], "accounts/")):
        assert isinstance(bad, InvalidArgument)
        with pytest.raises(InvalidArgument) as single:
            converters.account_id_from(name, "name")
        assert (bad.reason, bad.message) == (single.value.reason, single.value.message)


def test_results_to_proto() -> None:
    found = converters.account_result_to_proto(AccountItemResult(0, account("a1")))
    assert found.index == 0 and found.error_reason == er.ERROR_REASON_UNSPECIFIED and not found.error_message
    assert found.account == converters.account_to_proto(account("a1"))
    missing = converters.account_result_to_proto(AccountItemResult(3, None, "RESOURCE_NOT_FOUND", "account not found"))
    assert missing.index == 3 and not missing.HasField("account")
    assert (missing.error_reason, missing.error_message) == (er.ERROR_REASON_RESOURCE_NOT_FOUND, "account not found")
