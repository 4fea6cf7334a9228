"""CustomerAccountService.GetConsentReadActivity over real gRPC (SQLite and PostgreSQL): what a
wallet read with a consent, per UTC day and permission, for the customer's dashboard. Only
reads the consent checks admitted count; counts survive a restart of the service."""

from __future__ import annotations

import datetime as dt

import grpc
import pytest

from openbank.account.v1 import account_pb2, customer_account_pb2, customer_account_pb2_grpc
from openbank.common.v1 import consent_permission_pb2 as cp
from tests.integration.account.harness import AccountHarness, money, reason_of, running_account_service

BANK_APP = ("consents:authorise",)


async def _activity(harness: AccountHarness, consent: str, days: int = 0) -> list[tuple[str, int, int]]:
    stub = customer_account_pb2_grpc.CustomerAccountServiceStub(harness.channel)
    answer = await stub.GetConsentReadActivity(
        customer_account_pb2.GetConsentReadActivityRequest(consent=consent, days=days),
        metadata=harness.metadata(scopes=BANK_APP, subject="service:bankweb"),
        timeout=10,
    )
    return [(r.day, r.permission, r.read_count) for r in answer.reads]


async def test_admitted_reads_are_counted_per_permission_and_consent(harness: AccountHarness) -> None:
    account = await harness.open()
    harness.consents.grant("c-reads", [account.name])
    harness.consents.grant(
        "c-narrow", [account.name], permissions=frozenset({"READ_ACCOUNTS"})
    )  # may not read balances
    partner = harness.partner("c-reads")
    for _ in range(3):
        await harness.accounts.GetBalance(account_pb2.GetBalanceRequest(account=account.name), metadata=partner)
    await harness.accounts.ListAccounts(account_pb2.ListAccountsRequest(), metadata=partner)
    await harness.accounts.ConfirmFunds(
        account_pb2.ConfirmFundsRequest(account=account.name, amount=money(1)), metadata=partner
    )
    # Refused reads never count: a permission the consent lacks, another partner's call.
    with pytest.raises(grpc.aio.AioRpcError):
        await harness.accounts.GetBalance(
            account_pb2.GetBalanceRequest(account=account.name), metadata=harness.partner("c-narrow")
        )
    with pytest.raises(grpc.aio.AioRpcError):
        await harness.accounts.GetBalance(
            account_pb2.GetBalanceRequest(account=account.name),
            metadata=harness.partner("c-reads", partner_id="partner-2"),
        )

    today = dt.datetime.now(dt.UTC).date().isoformat()
    expected = [
        (today, cp.CONSENT_PERMISSION_READ_ACCOUNTS, 1),
        (today, cp.CONSENT_PERMISSION_READ_BALANCES, 3),
        (today, cp.CONSENT_PERMISSION_CONFIRM_FUNDS, 1),
    ]
    got = await _activity(harness, "consents/c-reads")
    assert sorted(got) == sorted(expected)  # unsaved counts answer too
    await harness.server.components.read_activity.flush()  # type: ignore[attr-defined]
    assert sorted(await _activity(harness, "consents/c-reads")) == sorted(expected)  # saved, not doubled
    assert await _activity(harness, "consents/c-narrow") == []


async def test_counts_survive_a_restart_and_bad_input_is_refused(database_url: str) -> None:
    async with running_account_service(database_url, read_activity_flush_seconds=60) as first:
        account = await first.open()
        first.consents.grant("c-restart", [account.name])
        for _ in range(2):
            await first.accounts.GetAccount(
                account_pb2.GetAccountRequest(name=account.name), metadata=first.partner("c-restart")
            )
    # The first service saved its counts when it stopped (its loop would wait a minute).
    async with running_account_service(database_url) as second:
        got = await _activity(second, "consents/c-restart", days=1)
        assert [(permission, count) for _, permission, count in got] == [(cp.CONSENT_PERMISSION_READ_ACCOUNTS, 2)]
        stub = customer_account_pb2_grpc.CustomerAccountServiceStub(second.channel)
        for request in (
            customer_account_pb2.GetConsentReadActivityRequest(consent="consents/c-restart", days=32),
            customer_account_pb2.GetConsentReadActivityRequest(consent="not-a-consent"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetConsentReadActivity(
                    request, metadata=second.metadata(scopes=BANK_APP, subject="service:bankweb")
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert reason_of(refused.value) == "FIELD_INVALID"
        # Partners never read it (their tokens lack consents:authorise).
        with pytest.raises(grpc.aio.AioRpcError) as partner:
            await stub.GetConsentReadActivity(
                customer_account_pb2.GetConsentReadActivityRequest(consent="consents/c-restart"),
                metadata=second.partner("c-restart"),
            )
        assert partner.value.code() == grpc.StatusCode.PERMISSION_DENIED
