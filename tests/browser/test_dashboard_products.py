"""The bank's products on the customer's dashboard (issue 28 item 3), in headless Chromium
against the local mesh: a wallet applies for an account for a new customer, the customer
activates it on the bank's page, signs in and sees the application (through which wallet,
when, where it stands, the account it opened)."""

from __future__ import annotations

import datetime as dt
import random
import string
from urllib.parse import urlsplit

import pytest
from google.protobuf import timestamp_pb2
from selenium.webdriver.common.by import By

from meshlib import totp
from openbank.identity.v1 import onboarding_pb2
from tests.browser.harness import wait_for_url

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

PASSWORD = "a password of my own choosing"


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

    # The customer's browser, sent by the wallet to the bank's activation page.
    driver.delete_all_cookies()
    driver.get(application.activation_uri)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "password_again").send_keys(PASSWORD)
    driver.find_element(By.ID, "activate").click()
    wait_for_url(driver, lambda url: "code=" not in url and bool(driver.find_elements(By.ID, "username")))
    username = driver.find_element(By.ID, "username").text
    seed = totp.from_base32(driver.find_element(By.ID, "totp-secret").text)

    driver.get(f"{bank}/consents")
    assert urlsplit(driver.current_url).path == "/sign-in"
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "one_time_code").send_keys(totp.hotp(seed, totp.time_step(now.timestamp())))
    driver.find_element(By.ID, "sign-in").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == "/consents")
    application_id = application.name.removeprefix("applications/")
    row = driver.find_element(By.ID, f"application-{application_id}").text
    assert "Acme Wallet" in row and "Account open and active" in row, row
    assert application.create_time.ToDatetime(tzinfo=dt.UTC).strftime("%d %B %Y") in row, row
    assert "current account" in row, row  # the account it opened, by its name
