"""Dynamic isolation end to end against the browser tests' mesh of real processes, whose payment
service runs a fast policy (isolation_policy_fast.yaml: bill payments unused for 10 seconds are
paused): a customer pays a transfer through the wallet; the leased sweep pauses bill payments,
which they never made; the wallet's bill payment is refused CAPABILITY_PAUSED and the wallet
is told on its event log; in headless Chromium the customer sees the notice on the dashboard,
restores bill payments on "Limits and features", and the wallet's next bill payment settles. The
operator's `openbank-mesh isolation show` shows the pause."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest
from openbank_sdk import ConsentSession, OpenBankClient, OpenBankError, money
from openbank_sdk.events import PartnerEvents
from selenium.webdriver.common.by import By

from meshcli.operator import Operator
from openbank.common.v1 import consent_permission_pb2 as permissions
from openbank.events.v1 import events_pb2
from openbank.payment.v1 import isolation_pb2, isolation_pb2_grpc, payment_pb2
from tests.browser.harness import PASSWORD, authorise, fund, make_customer, wait_for_next_page, wait_for_url
from tests.support.cli import run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

GRANTED = (permissions.CONSENT_PERMISSION_READ_ACCOUNTS, permissions.CONSENT_PERMISSION_INITIATE_PAYMENTS)
BILL = payment_pb2.PAYMENT_TYPE_BILL_PAYMENT
CHANGED = events_pb2.EVENT_TYPE_CUSTOMER_CAPABILITY_CHANGED


async def _bill_payment(operator: Operator, customer: str) -> isolation_pb2.CustomerCapability:
    stub = isolation_pb2_grpc.IsolationAdminServiceStub(operator.channel("payment"))
    answer = await stub.GetCustomerIsolation(
        isolation_pb2.GetCustomerIsolationRequest(customer=customer), metadata=await operator.metadata()
    )
    assert answer.policy_version == "browser-fast.1"
    (bill,) = [c for c in answer.capabilities if c.capability == "BILL_PAYMENT"]
    return bill


async def _told(events: PartnerEvents, session: ConsentSession, count: int) -> list[events_pb2.Event]:
    """The wallet's capability events on the consent, once ``count`` have come (the relay's tick)."""
    deadline = time.monotonic() + 20
    while True:
        page = await events.poll(after_cursor="", types=[CHANGED], consents=[session.consent], max_events=100)
        if len(page.events) >= count or time.monotonic() > deadline:
            return list(page.events)
        await asyncio.sleep(0.3)


async def test_an_unused_payment_type_is_paused_refused_restored_on_the_bank_page_and_then_paid(world) -> None:  # type: ignore[no-untyped-def]
    operator, driver, bank = world["operator"], world["driver"], world["bank"]
    wallet: OpenBankClient = world["wallet"]
    customer, utility = await make_customer(operator), await make_customer(operator)
    await fund(operator, customer.account, 50_000)
    pending = await wallet.create_consent(GRANTED, per_payment_limit=money(10_000, "EUR"), reads_per_day=10)
    session = await wallet.exchange_code(await authorise(operator, pending.name, customer), pending.pkce.verifier)
    paid = await session.create_payment(customer.account, money(1_000, "EUR"), creditor_account=utility.account)
    assert paid.state == payment_pb2.PAYMENT_STATE_SETTLED

    # Never used, bill payments are paused by the sweep 10 seconds on (a restore gives 10 more).
    deadline = time.monotonic() + 30
    while (
        bill := await _bill_payment(operator, customer.name)
    ).status != isolation_pb2.CUSTOMER_CAPABILITY_STATUS_PAUSED:
        assert time.monotonic() < deadline, bill
        await asyncio.sleep(0.3)
    assert bill.changed_by == "isolation-sweep" and bill.reason.startswith("never used for")
    with pytest.raises(OpenBankError) as refused:
        await session.create_payment(
            customer.account, money(2_000, "EUR"), creditor_account=utility.account, payment_type=BILL
        )
    assert (refused.value.reason, refused.value.metadata["capability"]) == ("CAPABILITY_PAUSED", "BILL_PAYMENT")
    assert refused.value.metadata["restore"] == "customer_at_bank"
    events = PartnerEvents(wallet)
    (paused,) = await _told(events, session, 1)
    assert paused.resource == session.consent and paused.customer_capability.capability == "BILL_PAYMENT"
    assert paused.customer_capability.status == "CUSTOMER_CAPABILITY_STATUS_PAUSED"

    code, shown = await run_cli(world["mesh"].data_dir, "isolation", "show", customer.name)
    assert code == 0 and "policy in force: browser-fast.1" in shown, shown
    (line,) = [row for row in shown.splitlines() if row.startswith("BILL_PAYMENT")]
    assert "PAUSED" in line and "never used for" in line and "isolation-sweep" in line, shown
    driver.delete_all_cookies()
    driver.get(f"{bank}/consents")
    driver.find_element(By.ID, "username").send_keys(customer.username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "one_time_code").send_keys(customer.code())
    driver.find_element(By.ID, "sign-in").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == "/consents")
    assert "bill payments" in driver.find_element(By.ID, "limits-notice").text
    driver.find_element(By.ID, "limits-link").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == "/limits")
    card = driver.find_element(By.ID, "capability-BILL_PAYMENT")
    assert "Bill payments" in card.text and "Paused" in card.text
    card.find_element(By.ID, "restore-BILL_PAYMENT").click()
    wait_for_next_page(driver, card)  # posted, then back on /limits
    page = driver.find_element(By.TAG_NAME, "main").text
    assert "Restored: Bill payments" in driver.find_element(By.ID, "notice").text, page
    assert not driver.find_elements(By.ID, "capability-BILL_PAYMENT")

    bill_paid = await session.create_payment(
        customer.account, money(2_000, "EUR"), creditor_account=utility.account, payment_type=BILL
    )
    assert bill_paid.state == payment_pb2.PAYMENT_STATE_SETTLED
    restored = await _bill_payment(operator, customer.name)
    assert restored.status == isolation_pb2.CUSTOMER_CAPABILITY_STATUS_ACTIVE
    assert restored.changed_by == f"customer:{customer.name.removeprefix('customers/')}"
    told = await _told(events, session, 2)
    assert [e.customer_capability.status for e in told][:2] == [
        "CUSTOMER_CAPABILITY_STATUS_PAUSED",
        "CUSTOMER_CAPABILITY_STATUS_ACTIVE",
    ]
