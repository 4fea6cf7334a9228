"""The credit line end to end against the local mesh of real processes (issue 28 item 2): the
wallet asks the bank for an offer through the gateway (the SDK, under the customer's consent);
in headless Chromium the customer signs in on the bank's page and accepts it; a payment takes
the account below zero; interest accrues day by day (the account service's accrual clock runs a
day a second here, tests/browser/conftest.py) exactly by the rule; a repayment clears what is
owed; the customer closes the line; the ledger sums to zero throughout; the wallet is told each
change of the offer and the line on its event log."""

from __future__ import annotations

import asyncio
import time
import uuid
from fractions import Fraction
from urllib.parse import urlsplit

import grpc
import pytest
import pytest_asyncio
from openbank_sdk import OpenBankClient, money
from openbank_sdk.credit import ACCEPTED, CREDIT, OFFERED, REFUSED
from openbank_sdk.errors import OpenBankError
from openbank_sdk.events import PartnerEvents
from selenium.webdriver.common.by import By

from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc
from openbank.common.v1 import consent_permission_pb2 as permissions
from openbank.credit.v1 import credit_pb2, credit_pb2_grpc
from openbank.events.v1 import events_pb2
from openbank.payment.v1 import payment_pb2
from services.account.domain.credit_interest import accrue_day
from tests.browser.harness import PASSWORD, authorise, fund, make_customer, wait_for_next_page, wait_for_url

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

GRANTED = (permissions.CONSENT_PERMISSION_READ_BALANCES, permissions.CONSENT_PERMISSION_INITIATE_PAYMENTS, CREDIT)
APR = 3_650  # tests/browser/credit_rules_e2e.yaml
CREDIT_EVENTS = (events_pb2.EVENT_TYPE_CREDIT_OFFER_STATE_CHANGED, events_pb2.EVENT_TYPE_CREDIT_LINE_STATE_CHANGED)


async def ledger_sums_to_zero(operator) -> None:  # type: ignore[no-untyped-def]
    totals = await account_admin_pb2_grpc.AccountAdminServiceStub(operator.channel("account")).GetLedgerTotals(
        account_admin_pb2.GetLedgerTotalsRequest(), metadata=await operator.metadata(), timeout=10
    )
    assert totals.totals and all(t.balanced and t.net.minor_units == 0 for t in totals.totals), totals


async def wait_for(check, what: str, seconds: float = 20.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {seconds}s for {what}")
        await asyncio.sleep(0.5)


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def wallet(world):  # type: ignore[no-untyped-def]
    """Acme with the customer in front of it (its reads are not the consent's unattended ones)."""
    acme = world["demo"]["partners"]["acme"]
    client = OpenBankClient.connect(
        f"127.0.0.1:{world['mesh'].ports['gateway']}",
        acme["client_id"],
        acme["client_secret"],
        insecure=True,
        customer_ip_address="198.51.100.7",
    )
    try:
        yield client
    finally:
        await client.close()


async def test_offer_accepted_on_the_bank_page_drawn_accrued_repaid_and_closed(world, wallet) -> None:  # type: ignore[no-untyped-def]
    operator, driver = world["operator"], world["driver"]
    customer, shop = await make_customer(operator), await make_customer(operator)
    pending = await wallet.create_consent(GRANTED, per_payment_limit=money(100_000, "EUR"))
    session = await wallet.exchange_code(await authorise(operator, pending.name, customer), pending.pkce.verifier)

    # No income yet: the bank refuses, with its reason, as an outcome (not an error).
    refused = await session.request_credit_offer(customer.account)
    assert refused.state == REFUSED and not refused.acceptance_uri
    assert refused.refusal_reason == credit_pb2.CREDIT_REFUSAL_REASON_NOT_ENOUGH_INCOME_HISTORY

    await fund(operator, customer.account, 60_000)  # income: the limit is half of it, 300.00
    offer = await session.request_credit_offer(customer.account)
    assert offer.state == OFFERED and offer.limit.minor_units == 30_000 and offer.apr_bps == APR, offer
    assert urlsplit(offer.acceptance_uri).path == f"/credit/offers/{offer.name.removeprefix('creditOffers/')}"

    # The customer opens the bank's page from the wallet, signs in (password and one-time code)
    # and is brought back to the offer, then accepts it.
    driver.delete_all_cookies()
    driver.get(offer.acceptance_uri)
    wait_for_url(driver, lambda url: urlsplit(url).path == "/sign-in")
    driver.find_element(By.ID, "username").send_keys(customer.username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "one_time_code").send_keys(customer.code())
    driver.find_element(By.ID, "sign-in").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == urlsplit(offer.acceptance_uri).path)
    assert driver.find_element(By.ID, "limit").text == "EUR 300.00"
    accept = driver.find_element(By.ID, "accept")
    accept.click()
    wait_for_next_page(driver, accept)
    assert "below zero down to EUR 300.00" in driver.find_element(By.ID, "notice").text
    accepted = await session.credit_offer(offer.name)
    assert accepted.state == ACCEPTED and accepted.credit_line
    await ledger_sums_to_zero(operator)

    # A payment takes the account below zero (800.00 from 600.00); one more beyond the limit is refused.
    paid = await session.create_payment(customer.account, money(80_000, "EUR"), creditor_account=shop.account)
    assert paid.state == payment_pb2.PAYMENT_STATE_SETTLED, paid
    balance = await session.balance(customer.account)
    # -200.00, and a day's interest already if the accrual clock (a day a second) turned meanwhile.
    assert -20_000 - 3 * 20 <= balance.current.minor_units <= -20_000
    over = await session.create_payment(customer.account, money(10_001, "EUR"), creditor_account=shop.account)
    assert over.state == payment_pb2.PAYMENT_STATE_REJECTED and over.status_reason == "INSUFFICIENT_FUNDS", over

    # Days of interest accrue (a day a second), each booked once, exactly by the daily rule.
    async def three_days() -> credit_pb2.GetCreditStatementResponse | None:
        statement = await session.credit_statement(accepted.credit_line)
        interest = [m for m in statement.movements if m.kind == credit_pb2.CREDIT_MOVEMENT_KIND_INTEREST]
        return statement if len(interest) >= 3 else None

    statement = await wait_for(three_days, "three days of interest")
    carry = Fraction(0)
    for movement in reversed(statement.movements):  # oldest first
        if movement.kind != credit_pb2.CREDIT_MOVEMENT_KIND_INTEREST:
            continue
        before = movement.balance_after.minor_units + movement.amount.minor_units
        accrual = accrue_day(before, APR, carry)
        assert movement.amount.minor_units == accrual.charged, (movement, before)
        carry = accrual.carry
    await ledger_sums_to_zero(operator)

    # A repayment (any credit to the account) clears what is owed; then the customer closes the line.
    line = await session.credit_line(accepted.credit_line)
    assert line.owed.minor_units >= 20_000 + 3 * 20 and line.interest_charged.minor_units >= 3 * 20
    await fund(operator, customer.account, line.owed.minor_units + 5_000)

    async def repaid() -> credit_pb2.CreditLine | None:
        now = await session.credit_line(accepted.credit_line)
        return now if now.owed.minor_units == 0 else None

    line = await wait_for(repaid, "the line repaid")
    assert line.repaid.minor_units == 20_000 + line.interest_charged.minor_units
    customer_credit = credit_pb2_grpc.CustomerCreditServiceStub(operator.channel("account"))
    closed = await customer_credit.CloseCreditLine(
        credit_pb2.CloseCreditLineRequest(
            request_id=uuid.uuid4().hex, name=accepted.credit_line, customer=customer.name
        ),
        metadata=await operator.bank_app_metadata(),
        timeout=10,
    )
    assert closed.credit_line.state == credit_pb2.CREDIT_LINE_STATE_CLOSED
    balance = await session.balance(customer.account)
    assert balance.available.minor_units == balance.current.minor_units == 5_000  # no overdraft any more
    await ledger_sums_to_zero(operator)

    # The wallet was told each change on its event log, under the consent it asked with.
    line_name, offer_name = accepted.credit_line, offer.name
    told = PartnerEvents(world["wallet"])
    expected = [
        (refused.name, "CREDIT_OFFER_STATE_REFUSED"),
        (offer_name, "CREDIT_OFFER_STATE_OFFERED"),
        (offer_name, "CREDIT_OFFER_STATE_ACCEPTED"),
        (line_name, "CREDIT_LINE_STATE_ACTIVE"),
        (line_name, "CREDIT_LINE_STATE_CLOSED"),
    ]

    async def all_told() -> list[tuple[str, str]] | None:
        page = await told.poll(consents=[pending.name], types=CREDIT_EVENTS, max_events=100)
        seen = [(event.resource, event.credit.state) for event in page.events]
        return seen if seen == expected else None

    await wait_for(all_told, "the credit events on the wallet's log")


async def accept_as_bank_app(operator, offer: str, customer: str, request_id: str):  # type: ignore[no-untyped-def]
    """The bank app's AcceptCreditOffer (what the page calls once the customer clicked)."""
    return await credit_pb2_grpc.CustomerCreditServiceStub(operator.channel("account")).AcceptCreditOffer(
        credit_pb2.AcceptCreditOfferRequest(request_id=request_id, name=offer, customer=customer),
        metadata=await operator.bank_app_metadata(),
        timeout=20,
    )


async def test_a_crash_before_the_acceptance_commits_opens_nothing_and_the_retry_opens_one_line(world, wallet) -> None:  # type: ignore[no-untyped-def]
    """The account service dies (os._exit at its failpoint) inside the acceptance's transaction:
    nothing of it stays (offer OFFERED, no line, no overdraft); restarted, the bank app's retry
    with the same request_id opens exactly one line, and a replay answers that line."""
    operator, mesh = world["operator"], world["mesh"]
    customer = await make_customer(operator)
    pending = await wallet.create_consent(GRANTED, per_payment_limit=money(100_000, "EUR"))
    session = await wallet.exchange_code(await authorise(operator, pending.name, customer), pending.pkce.verifier)
    await fund(operator, customer.account, 60_000)
    offer = await session.request_credit_offer(customer.account)
    assert offer.state == OFFERED
    account = mesh.replica("account")
    account.launch_env["OBM_CREDIT_FAILPOINT"] = "before_accept_commit"
    try:
        mesh.kill(account)
        await mesh.restart(account)
        request_id = uuid.uuid4().hex
        with pytest.raises(grpc.aio.AioRpcError):
            await accept_as_bank_app(operator, offer.name, customer.name, request_id)
        assert await asyncio.wait_for(account.process.wait(), 20) == 137
    finally:
        account.launch_env.pop("OBM_CREDIT_FAILPOINT", None)
        if account.process is not None and account.process.returncode is None:
            mesh.kill(account)
        await mesh.restart(account)

    async def forwarded() -> credit_pb2.CreditOffer | None:
        try:
            return await session.credit_offer(offer.name)
        except OpenBankError as error:  # the gateway still holds account as down: retry as a wallet does
            if error.reason not in ("UPSTREAM_UNAVAILABLE", "UPSTREAM_TIMEOUT", "SERVICE_UNAVAILABLE"):
                raise
            return None

    assert (await wait_for(forwarded, "the gateway forwarding to account again")).state == OFFERED
    balance = await session.balance(customer.account)
    assert balance.available.minor_units == balance.current.minor_units == 60_000  # no overdraft
    accepted = await accept_as_bank_app(operator, offer.name, customer.name, request_id)
    again = await accept_as_bank_app(operator, offer.name, customer.name, request_id)
    assert accepted.credit_offer.state == ACCEPTED and again.credit_line.name == accepted.credit_line.name
    lines = await credit_pb2_grpc.CustomerCreditServiceStub(operator.channel("account")).ListCustomerCreditLines(
        credit_pb2.ListCustomerCreditLinesRequest(customer=customer.name),
        metadata=await operator.bank_app_metadata(),
        timeout=10,
    )
    assert [line.name for line in lines.credit_lines] == [accepted.credit_line.name]
    balance = await session.balance(customer.account)
    assert balance.available.minor_units == 60_000 + 30_000  # the limit
    await ledger_sums_to_zero(operator)
