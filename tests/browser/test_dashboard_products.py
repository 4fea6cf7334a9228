"""The bank's products on the customer's dashboard and what a wallet reads of them (issue 28
item 3), in headless Chromium against the local mesh: a wallet applies for an account for a new
customer, the customer activates it on the bank's page, signs in and sees the application
(through which wallet, when, where it stands, the account it opened); a credit line shows its
limit, what is owed, interest and repayments, and its close button only once nothing is owed;
the wallet reads the line only under the customer's consent for credit on that account."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import string
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from google.protobuf import timestamp_pb2
from openbank_sdk import OpenBankError, money
from openbank_sdk.credit import CREDIT, OFFERED
from selenium.webdriver.common.by import By

from meshcli.mesh import CUSTOMER_NOTIFICATIONS_FILE
from meshlib import totp
from openbank.common.v1 import consent_permission_pb2 as permissions
from openbank.credit.v1 import credit_pb2, credit_pb2_grpc
from openbank.identity.v1 import onboarding_pb2
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

NEW_PASSWORD = "a password of my own choosing"


def _stamp(moment: dt.datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(moment)
    return stamp


async def test_an_account_opened_through_a_wallet_shows_on_the_customers_dashboard(world) -> None:  # type: ignore[no-untyped-def]
    wallet, driver, bank = world["wallet"], world["driver"], world["bank"]
    now = dt.datetime.now(dt.UTC)
    # A person the bank has never seen (the duplicate check compares names and birth dates).
    family = "".join(random.choices(string.ascii_lowercase, k=10)).capitalize()
    new = await wallet.submit_application(
        onboarding_pb2.Applicant(
            given_name="Mira", family_name=family, birth_date="1991-07-14", email="mira@example.org", country_code="NL"
        ),
        onboarding_pb2.VerificationEvidence(
            document_type="PASSPORT",
            document_number=family.upper(),
            document_expiry_date="2031-05-01",
            method="NFC_CHIP_AND_LIVENESS",
            verify_time=_stamp(now - dt.timedelta(hours=1)),
        ),
        terms_version="2026-01",
        terms_accepted=now - dt.timedelta(minutes=1),
    )
    application = await wallet.wait_for_account(new.application.name, timeout=60, interval=0.3)
    assert application.state == onboarding_pb2.APPLICATION_STATE_ACCOUNT_OPEN, application

    # The customer's browser, sent by the wallet to the bank's activation page. The link is not
    # enough (the wallet has it): without the code the bank sent the customer itself the page
    # sets no password and shows no authenticator secret.
    driver.delete_all_cookies()
    driver.get(application.activation_uri)
    code = sent_code(world["mesh"].data_dir, application.name)
    for typed in ("00000000" if code != "00000000" else "11111111", code):
        driver.find_element(By.ID, "customer_code").send_keys(typed)
        driver.find_element(By.ID, "password").send_keys(NEW_PASSWORD)
        driver.find_element(By.ID, "password_again").send_keys(NEW_PASSWORD)
        driver.find_element(By.ID, "activate").click()
        if typed != code:
            wait_for_url(driver, lambda url: bool(driver.find_elements(By.ID, "message")))
            assert "Attempts left: 4" in driver.find_element(By.ID, "message").text
            assert not driver.find_elements(By.ID, "totp-secret") and "otpauth" not in driver.page_source
    wait_for_url(driver, lambda url: "code=" not in url and bool(driver.find_elements(By.ID, "username")))
    username = driver.find_element(By.ID, "username").text
    seed = totp.from_base32(driver.find_element(By.ID, "totp-secret").text)

    driver.get(f"{bank}/consents")
    assert urlsplit(driver.current_url).path == "/sign-in"
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(NEW_PASSWORD)
    driver.find_element(By.ID, "one_time_code").send_keys(totp.hotp(seed, totp.time_step(now.timestamp())))
    driver.find_element(By.ID, "sign-in").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == "/consents")
    application_id = application.name.removeprefix("applications/")
    row = driver.find_element(By.ID, f"application-{application_id}").text
    assert "Acme Wallet" in row and "Account open and active" in row, row
    assert application.create_time.ToDatetime(tzinfo=dt.UTC).strftime("%d %B %Y") in row, row
    assert "current account" in row, row  # the account it opened, by its name


def sent_code(data_dir: Path, name: str) -> str:
    """The activation code the bank sent the applicant (the local mesh's notification file)."""
    messages = [json.loads(line) for line in (data_dir / CUSTOMER_NOTIFICATIONS_FILE).read_text().splitlines()]
    return str([m["code"] for m in messages if f"applications/{m['application_id']}" == name][-1])


async def _refused(call) -> OpenBankError:  # type: ignore[no-untyped-def]
    with pytest.raises(OpenBankError) as refused:
        await call
    return refused.value


def _sign_in(world, customer: WebCustomer) -> None:  # type: ignore[no-untyped-def]
    driver = world["driver"]
    driver.delete_all_cookies()
    driver.get(f"{world['bank']}/consents")
    driver.find_element(By.ID, "username").send_keys(customer.username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "one_time_code").send_keys(customer.code())
    driver.find_element(By.ID, "sign-in").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == "/consents")


async def test_a_credit_line_on_the_dashboard_closes_once_nothing_is_owed_and_the_wallet_reads_it_only_under_its_consent(  # noqa: E501
    world,
) -> None:  # type: ignore[no-untyped-def]
    operator, driver, wallet = world["operator"], world["driver"], world["wallet"]
    customer = await make_customer(operator)
    granted = (permissions.CONSENT_PERMISSION_READ_BALANCES, permissions.CONSENT_PERMISSION_INITIATE_PAYMENTS, CREDIT)
    pending = await wallet.create_consent(granted, per_payment_limit=money(100_000, "EUR"))
    session = await wallet.exchange_code(await authorise(operator, pending.name, customer), pending.pkce.verifier)
    await fund(operator, customer.account, 60_000)  # a month's income: a 300.00 line (credit_rules_e2e.yaml)
    offer = await session.request_credit_offer(customer.account)
    assert offer.state == OFFERED, offer
    customer_credit = credit_pb2_grpc.CustomerCreditServiceStub(operator.channel("account"))
    accepted = await customer_credit.AcceptCreditOffer(
        credit_pb2.AcceptCreditOfferRequest(request_id=uuid.uuid4().hex, name=offer.name, customer=customer.name),
        metadata=await operator.bank_app_metadata(),
        timeout=10,
    )
    line_name = accepted.credit_line.name
    line_id = line_name.removeprefix("creditLines/")
    paid = await session.create_payment(
        customer.account, money(80_000, "EUR"), creditor_wallet=world["demo"]["partners"]["acme"]["partner"]
    )
    assert paid.state == payment_pb2.PAYMENT_STATE_SETTLED, paid  # 200.00 drawn

    # Fair data use: a consent without CREDIT reads and asks nothing of credit; another
    # customer's consent with CREDIT does not reach this line. (Another customer: each consent
    # authorised costs a one-time code, and this customer still signs in below.)
    other = await make_customer(operator)
    balances = await wallet.create_consent((permissions.CONSENT_PERMISSION_READ_BALANCES,))
    balances_only = await wallet.exchange_code(await authorise(operator, balances.name, other), balances.pkce.verifier)
    assert (await _refused(balances_only.request_credit_offer(other.account))).code.name == "PERMISSION_DENIED"
    assert (await _refused(balances_only.credit_line(line_name))).code.name == "PERMISSION_DENIED"
    theirs = await wallet.create_consent((CREDIT,))
    other_session = await wallet.exchange_code(await authorise(operator, theirs.name, other), theirs.pkce.verifier)
    assert (await _refused(other_session.credit_line(line_name))).code.name == "NOT_FOUND"
    assert (await session.credit_line(line_name)).owed.minor_units >= 20_000

    # The customer's dashboard: the line's figures; no close button while something is owed.
    _sign_in(world, customer)
    card = driver.find_element(By.ID, f"credit-line-{line_id}")
    assert card.find_element(By.CLASS_NAME, "limit").text == "EUR 300.00"
    assert card.find_element(By.CLASS_NAME, "owed").text.startswith("EUR 2")  # 200.00 and the interest
    assert "36.50 % a year" in card.text
    assert not driver.find_elements(By.ID, f"close-{line_id}") and driver.find_elements(By.ID, f"close-later-{line_id}")

    # Repaid, the button appears; the customer closes the line from the dashboard.
    await fund(operator, customer.account, 30_000)
    for _ in range(40):  # the repayment reaches the line within 20 s
        if not (await session.credit_line(line_name)).owed.minor_units:
            break
        await asyncio.sleep(0.5)
    driver.get(f"{world['bank']}/consents")
    card = driver.find_element(By.ID, f"credit-line-{line_id}")
    assert card.find_element(By.CLASS_NAME, "owed").text == "EUR 0.00"
    assert card.find_element(By.CLASS_NAME, "repaid").text.startswith("EUR 2")
    close = driver.find_element(By.ID, f"close-{line_id}")
    close.click()
    wait_for_next_page(driver, close)
    assert urlsplit(driver.current_url).path == "/consents"
    assert "closed" in driver.find_element(By.ID, "notice").text
    assert "Closed" in driver.find_element(By.ID, f"credit-line-{line_id}").text
    assert not driver.find_elements(By.ID, f"close-{line_id}")
    assert (await session.credit_line(line_name)).state == credit_pb2.CREDIT_LINE_STATE_CLOSED
    # The customer ends the credit consent: the wallet reads the line no more.
    await wallet.revoke_consent(session.consent)
    assert (await _refused(session.credit_line(line_name))).code.name in ("PERMISSION_DENIED", "UNAUTHENTICATED")
