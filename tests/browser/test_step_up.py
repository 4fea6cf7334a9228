"""Step-up on the bank's pages against the local mesh of real processes: a wallet's payment far
above the customer's usual amounts waits for the customer (AWAITING_AUTHORISATION, under the
bank's default risk rules); in headless Chromium the customer signs in, sees the amount and the
payee the one-time code is bound to (PSD2 dynamic linking), and confirms with the code their
device shows: a wrong code, a code for another amount and one for another payee are refused and
the payment still waits; the right one settles it. Another payment is declined on the page and
is CANCELLED with nothing paid."""

from __future__ import annotations

import dataclasses
import datetime as dt
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from openbank_sdk import ConsentSession, OpenBankClient, money
from selenium.webdriver.common.by import By

from meshlib.money import Amount
from openbank.common.v1 import consent_permission_pb2 as permissions
from openbank.payment.v1 import payment_pb2
from services.payment.domain import step_up
from services.payment.domain.payments import Payment, PaymentState
from services.payment.settings import LOCAL_STEP_UP_SECRET
from tests.browser.harness import (
    PASSWORD,
    WebCustomer,
    authorise,
    fund,
    make_customer,
    wait_for_next_page,
    wait_for_url,
)

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

GRANTED = (permissions.CONSENT_PERMISSION_READ_BALANCES, permissions.CONSENT_PERMISSION_INITIATE_PAYMENTS)
# The local mesh's payment service runs with the settings' default step-up secret.
SECRET = LOCAL_STEP_UP_SECRET.encode()
USUAL, RISKY = 10, 30_000  # three payments of 0.10 EUR, then 300.00 EUR: 20x the average steps up


def device_code(payment: payment_pb2.Payment, customer: WebCustomer, **changed: object) -> str:
    """What the customer's device shows for the payment (the test plays the device); with
    ``changed`` fields, the code of another payment (another amount or payee)."""
    as_stored = Payment(
        payment_id=payment.name.removeprefix("payments/"),
        partner_id="",
        consent_id="",
        debtor_account_id="",
        creditor_account_id=payment.creditor_account.removeprefix("accounts/"),
        creditor_wallet_partner_id=None,
        amount=Amount(payment.amount.currency_code, payment.amount.minor_units),
        payment_type="TRANSFER",
        state=PaymentState.AWAITING_AUTHORISATION,
        created_at=dt.datetime.now(dt.UTC),
        updated_at=dt.datetime.now(dt.UTC),
        customer_id=customer.name.removeprefix("customers/"),
    )
    return step_up.code_for(SECRET, dataclasses.replace(as_stored, **changed))  # type: ignore[arg-type]


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def wallet(world):  # type: ignore[no-untyped-def]
    """Acme with the customer in front of it (the customer is confirming right now: its reads
    are not the consent's unattended ones)."""
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


async def _stepped_up(world, wallet: OpenBankClient) -> tuple[WebCustomer, ConsentSession, payment_pb2.Payment, str]:  # type: ignore[no-untyped-def]
    """A fresh customer whose wallet pays a shop three small amounts, then one far larger that
    the bank's risk rules step up; (customer, session, the waiting payment, the shop's account)."""
    operator = world["operator"]
    customer, shop = await make_customer(operator), await make_customer(operator)
    await fund(operator, customer.account, 100_000)
    pending = await wallet.create_consent(GRANTED, per_payment_limit=money(100_000, "EUR"), reads_per_day=50)
    session = await wallet.exchange_code(await authorise(operator, pending.name, customer), pending.pkce.verifier)
    for _ in range(3):
        paid = await session.create_payment(customer.account, money(USUAL, "EUR"), creditor_account=shop.account)
        assert paid.state == payment_pb2.PAYMENT_STATE_SETTLED, paid
    waiting = await session.create_payment(customer.account, money(RISKY, "EUR"), creditor_account=shop.account)
    assert (waiting.state, waiting.status_reason) == (
        payment_pb2.PAYMENT_STATE_AWAITING_AUTHORISATION,
        "AUTHORISATION_REQUIRED",
    ), waiting
    return customer, session, waiting, shop.account


def _sign_in_for_payments(world, customer: WebCustomer) -> None:  # type: ignore[no-untyped-def]
    driver, bank = world["driver"], world["bank"]
    driver.delete_all_cookies()
    driver.get(f"{bank}/payments/confirm")
    assert urlsplit(driver.current_url).path == "/sign-in"  # a signed-in customer only
    driver.find_element(By.ID, "username").send_keys(customer.username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "one_time_code").send_keys(customer.code())
    driver.find_element(By.ID, "sign-in").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == "/payments/confirm")


def _enter(driver, code: str) -> None:  # type: ignore[no-untyped-def]
    field = driver.find_element(By.ID, "authentication_code")
    field.clear()
    field.send_keys(code)
    old = driver.find_element(By.ID, "confirm")
    old.click()
    wait_for_next_page(driver, old)


async def test_a_stepped_up_payment_is_confirmed_on_the_banks_page_with_the_code_bound_to_it(world, wallet) -> None:  # type: ignore[no-untyped-def]
    driver = world["driver"]
    customer, session, waiting, shop_account = await _stepped_up(world, wallet)
    payment_id = waiting.name.removeprefix("payments/")
    balance_before = (await session.balance(customer.account)).available.minor_units

    _sign_in_for_payments(world, customer)
    listed = driver.find_element(By.ID, f"payment-{payment_id}").text
    assert "Acme Wallet" in listed and "EUR 300.00" in listed, listed
    driver.find_element(By.ID, f"open-{payment_id}").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == f"/payments/confirm/{payment_id}")
    # What the code is bound to, on the page: the amount and the payee.
    assert driver.find_element(By.ID, "amount").text == "EUR 300.00"
    assert shop_account.removeprefix("accounts/") in driver.find_element(By.ID, "payee").text

    right = device_code(waiting, customer)
    another_payee = device_code(waiting, customer, creditor_account_id="someone-else")
    another_amount = device_code(waiting, customer, amount=Amount("EUR", RISKY + 1))
    wrong = "000000" if right != "000000" else "111111"
    for code in (wrong, another_amount, another_payee):
        assert code != right
        _enter(driver, code)
        assert "does not match this payment" in driver.find_element(By.ID, "message").text
        assert (await session.get_payment(waiting.name)).state == payment_pb2.PAYMENT_STATE_AWAITING_AUTHORISATION
    assert "2 tries left" in driver.find_element(By.TAG_NAME, "main").text

    _enter(driver, right)
    assert urlsplit(driver.current_url).path == "/payments/confirm"
    assert "Confirmed. EUR 300.00 was paid to" in driver.find_element(By.ID, "notice").text
    assert driver.find_elements(By.ID, f"payment-{payment_id}") == []
    assert (await session.get_payment(waiting.name)).state == payment_pb2.PAYMENT_STATE_SETTLED
    assert (await session.balance(customer.account)).available.minor_units == balance_before - RISKY


async def test_a_stepped_up_payment_declined_on_the_page_is_cancelled_and_pays_nothing(world, wallet) -> None:  # type: ignore[no-untyped-def]
    driver = world["driver"]
    customer, session, waiting, _ = await _stepped_up(world, wallet)
    payment_id = waiting.name.removeprefix("payments/")
    balance_before = (await session.balance(customer.account)).available.minor_units

    _sign_in_for_payments(world, customer)
    driver.find_element(By.ID, f"open-{payment_id}").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == f"/payments/confirm/{payment_id}")
    old = driver.find_element(By.ID, "decline")
    old.click()
    wait_for_next_page(driver, old)
    assert "Declined. The payment of EUR 300.00" in driver.find_element(By.ID, "notice").text
    assert driver.find_element(By.ID, "none").text.startswith("No payment is waiting")
    ended = await session.get_payment(waiting.name)
    assert (ended.state, ended.status_reason) == (payment_pb2.PAYMENT_STATE_CANCELLED, "AUTHORISATION_DECLINED")
    assert (await session.balance(customer.account)).available.minor_units == balance_before
    # Gone from the pages: its address is "not found" now.
    driver.get(f"{world['bank']}/payments/confirm/{payment_id}")
    assert "Payment not found" in driver.find_element(By.TAG_NAME, "h1").text
