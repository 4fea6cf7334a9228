"""Payment mandates (VRP, sweeping) end to end against the local mesh of real processes: the
wallet (the Python SDK through the gateway) asks for a mandate, the customer sees its creditor
and limits on the bank's pages and authorises it once (the redirect flow in headless Chromium,
the decoupled flow on the approvals page); the wallet then pays under it without asking again,
confirms funds, and is refused with each reason (another creditor, above the maximum per
payment, above a day's and a week's limit, payments racing for the last of a week's allowance,
before its validity, before it is authorised, after the customer revoked it on the dashboard,
where the customer also sees what it used)."""

from __future__ import annotations

import asyncio
import datetime as dt
from urllib.parse import urlsplit

import pytest
from openbank_sdk import ConsentSession, OpenBankClient, OpenBankError, money
from openbank_sdk.mandates import CONSENT_ALIGNED, DAY, WEEK, mandate, periodic_limit
from selenium.webdriver.common.by import By

from openbank.common.v1 import consent_permission_pb2 as permissions
from openbank.payment.v1 import payment_pb2
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

PAY = (permissions.CONSENT_PERMISSION_INITIATE_PAYMENTS, permissions.CONSENT_PERMISSION_CONFIRM_FUNDS)
SETTLED = payment_pb2.PAYMENT_STATE_SETTLED


async def _refused(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(OpenBankError) as refused:
        await call
    return refused.value.reason


def _sign_in(driver, customer: WebCustomer) -> None:  # type: ignore[no-untyped-def]
    driver.find_element(By.ID, "username").send_keys(customer.username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "one_time_code").send_keys(customer.code())
    driver.find_element(By.ID, "sign-in").click()


async def test_a_mandate_authorised_once_pays_within_its_limits_and_the_customer_revokes_it(world) -> None:  # type: ignore[no-untyped-def]
    wallet: OpenBankClient = world["wallet"]
    driver, bank, callback, operator = world["driver"], world["bank"], world["callback"], world["operator"]
    customer = await make_customer(operator, accounts=2)
    shop = await make_customer(operator)
    await fund(operator, customer.account, 100_000)
    acme = world["demo"]["partners"]["acme"]["partner"]

    # The redirect flow: the consent page shows the mandate; one account is picked.
    asked = mandate(
        money(1_500, "EUR"),
        creditor_account=shop.account,
        periodic_limits=[periodic_limit(DAY, money(3_000, "EUR"))],
    )
    pending = await wallet.create_consent(PAY, mandate=asked)
    pushed = await wallet.push_authorization_request(pending, callback.uri)
    driver.delete_all_cookies()
    driver.get(pushed.url(bank))
    _sign_in(driver, customer)
    wait_for_url(driver, lambda url: urlsplit(url).path == "/authorize/consent")
    shown = driver.find_element(By.ID, "mandate").text
    assert f"Pays only to the account {shop.account.removeprefix('accounts/')}" in shown
    assert "At most EUR 15.00 per payment" in shown and "At most EUR 30.00 per day" in shown
    radios = driver.find_elements(By.NAME, "accounts")
    assert [r.get_attribute("type") for r in radios] == ["radio", "radio"]
    radios[0].click()
    driver.find_element(By.ID, "approve").click()
    wait_for_url(driver, lambda url: url.startswith(callback.uri + "?"))
    session: ConsentSession = await wallet.exchange_code(callback.last_query()["code"], pending.pkce.verifier)
    consent = await wallet.get_consent(session.consent)
    assert consent.mandate.creditor_account == shop.account and consent.accounts == [customer.account]

    # Paid without asking the customer again, to the creditor, within every limit.
    for _ in range(2):
        paid = await session.create_payment(customer.account, money(1_000, "EUR"), creditor_account=shop.account)
        assert paid.state == SETTLED
    assert await session.confirm_funds(customer.account, money(500, "EUR")) is True
    assert await session.confirm_funds(customer.account, money(10_000_000, "EUR")) is False
    other = (await make_customer(operator)).account
    assert (
        await _refused(session.create_payment(customer.account, money(10, "EUR"), creditor_account=other))
        == "MANDATE_CREDITOR_MISMATCH"
    )
    assert (
        await _refused(session.create_payment(customer.account, money(10, "EUR"), creditor_wallet=acme))
        == "MANDATE_CREDITOR_MISMATCH"
    )
    assert (
        await _refused(session.create_payment(customer.account, money(1_501, "EUR"), creditor_account=shop.account))
        == "MANDATE_AMOUNT_EXCEEDED"
    )
    assert (
        await _refused(session.create_payment(customer.account, money(1_001, "EUR"), creditor_account=shop.account))
        == "MANDATE_PERIOD_LIMIT_EXCEEDED"
    )
    (day,) = await session.mandate_usage()
    assert (day.used_amount.minor_units, day.remaining_amount.minor_units) == (2_000, 1_000)

    # The dashboard shows it with what it used; the customer revokes it there.
    driver.get(f"{bank}/consents/{session.consent.removeprefix('consents/')}")
    assert "Payment mandate" in driver.find_element(By.TAG_NAME, "main").text
    usage = driver.find_element(By.ID, "mandate-usage").text
    assert "EUR 30.00 per day" in usage and "EUR 20.00" in usage and "EUR 10.00" in usage
    assert not driver.find_elements(By.ID, "limits-form")  # a mandate is stopped, never edited
    driver.find_element(By.ID, "revoke").click()
    driver.find_element(By.ID, "confirm-revoke").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == "/consents")
    assert "Revoked" in driver.find_element(By.ID, "ended").text
    assert (
        await _refused(session.create_payment(customer.account, money(10, "EUR"), creditor_account=shop.account))
        == "CONSENT_REVOKED"
    )


async def test_a_sweeping_mandate_by_the_decoupled_flow_and_payments_racing_for_a_weeks_allowance(world) -> None:  # type: ignore[no-untyped-def]
    wallet: OpenBankClient = world["wallet"]
    driver, bank, operator = world["driver"], world["bank"], world["operator"]
    customer = await make_customer(operator)
    await fund(operator, customer.account, 100_000)
    acme = world["demo"]["partners"]["acme"]["partner"]
    sweeping = mandate(
        money(500, "EUR"),
        creditor_wallet=acme,
        periodic_limits=[periodic_limit(WEEK, money(2_500, "EUR"), CONSENT_ALIGNED)],
    )
    pending = await wallet.create_consent(PAY, mandate=sweeping)
    started = await wallet.start_decoupled_authorization(pending, customer.username, "Sweep 4K")
    # Not authorised yet: the wallet has no way to pay.
    assert await _refused(wallet.poll_decoupled_authorization(started)) == "AUTHORIZATION_PENDING"

    driver.delete_all_cookies()
    driver.get(f"{bank}/approvals")
    _sign_in(driver, customer)
    wait_for_url(driver, lambda url: urlsplit(url).path == "/approvals")
    (card,) = driver.find_elements(By.CSS_SELECTOR, "section.card")
    assert "Pays only into your balance with this app (sweeping)" in card.text
    assert "At most EUR 25.00 per week, counted from" in card.text
    card.find_element(By.NAME, "accounts").click()
    card.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
    wait_for_next_page(driver, card)  # the post redirects back to /approvals: no new URL to wait for
    session = await asyncio.wait_for(
        wallet.wait_for_decoupled_authorization(started, sleep=lambda s: asyncio.sleep(min(s, 0.3))), 30
    )

    # Eight payments of 5.00 race for the week's 25.00: exactly five are paid.
    racing = await asyncio.gather(
        *(session.create_payment(customer.account, money(500, "EUR"), creditor_wallet=acme) for _ in range(8)),
        return_exceptions=True,
    )
    paid = [p for p in racing if isinstance(p, payment_pb2.Payment)]
    assert len(paid) == 5 and {p.state for p in paid} == {SETTLED}
    assert {e.reason for e in racing if isinstance(e, OpenBankError)} == {"MANDATE_PERIOD_LIMIT_EXCEEDED"}
    (week,) = await session.mandate_usage()
    assert (week.used_amount.minor_units, week.remaining_amount.minor_units) == (2_500, 0)

    # A mandate that starts later refuses until then.
    later = mandate(money(500, "EUR"), creditor_wallet=acme, valid_from=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    pending = await wallet.create_consent(PAY, mandate=later)
    waiting = await wallet.exchange_code(await authorise(operator, pending.name, customer), pending.pkce.verifier)
    assert (
        await _refused(waiting.create_payment(customer.account, money(10, "EUR"), creditor_wallet=acme))
        == "MANDATE_NOT_VALID_NOW"
    )
    # The partner can read and revoke it too.
    assert (await wallet.revoke_consent(pending.name)).state == 4  # CONSENT_STATE_REVOKED
