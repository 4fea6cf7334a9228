"""The operator console against a local mesh of real processes, in headless Chromium: an
operator signs in with password and one-time code, sees the partners against their caps,
closes, settles and reconciles a settlement window from the page, finds a rejected payment
with its reason and the actions in the audit search; a read-only operator sees no actions and
is refused (and recorded) when it posts one anyway."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from openbank_sdk import OpenBankClient, money
from selenium.webdriver.common.by import By

from meshcli.console_operators import CREDENTIALS_FILE
from meshlib import totp
from openbank.common.v1 import consent_permission_pb2 as permissions
from tests.browser.harness import WebCustomer, authorise, fund, make_customer, wait_for_url

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

_authenticators: dict[str, WebCustomer] = {}


def _operator(world, username: str) -> tuple[str, WebCustomer]:  # type: ignore[no-untyped-def]
    """The local operator's password and authenticator (each code handed out once)."""
    credentials = json.loads((Path(world["mesh"].data_dir) / CREDENTIALS_FILE).read_text())[username]
    if username not in _authenticators:
        _authenticators[username] = WebCustomer("", username, "", totp.from_base32(credentials["totp_secret"]))
    return credentials["password"], _authenticators[username]


def _sign_in(world, username: str) -> None:  # type: ignore[no-untyped-def]
    driver, console = world["driver"], world["console"]
    password, authenticator = _operator(world, username)
    driver.delete_all_cookies()
    driver.get(f"{console}/windows")
    assert urlsplit(driver.current_url).path == "/sign-in"  # every page needs a signed-in operator
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "one_time_code").send_keys(authenticator.code())
    driver.find_element(By.ID, "sign-in").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == "/partners")
    assert username in driver.find_element(By.ID, "who").text


def _row(driver, window: str):  # type: ignore[no-untyped-def]
    return driver.find_element(By.CSS_SELECTOR, f'#windows tr[data-window="{window}"]')


def _rows(driver):  # type: ignore[no-untyped-def]
    return driver.find_elements(By.CSS_SELECTOR, "#windows tr[data-window]")


def _click_in_row(driver, window: str, button: str, console: str) -> None:  # type: ignore[no-untyped-def]
    _row(driver, window).find_element(By.CSS_SELECTOR, button).click()
    wait_for_url(driver, lambda url: url.startswith(f"{console}/windows"))


async def _payments(world) -> str:  # type: ignore[no-untyped-def]
    """A settled top-up to acme's wallet and a rejected one (more than the account holds)."""
    operator, wallet = world["operator"], world["wallet"]
    wallet: OpenBankClient
    customer = await make_customer(operator)
    await fund(operator, customer.account, 5_000)
    pending = await wallet.create_consent(
        (permissions.CONSENT_PERMISSION_INITIATE_PAYMENTS,), per_payment_limit=money(100_000, "EUR")
    )
    session = await wallet.exchange_code(await authorise(operator, pending.name, customer), pending.pkce.verifier)
    acme = world["demo"]["partners"]["acme"]["partner"]
    await session.create_payment(customer.account, money(2_500, "EUR"), creditor_wallet=acme)
    rejected = await session.create_payment(customer.account, money(90_000, "EUR"), creditor_wallet=acme)
    assert rejected.status_reason == "INSUFFICIENT_FUNDS"
    return str(rejected.name)


async def test_an_operator_closes_settles_and_reconciles_a_window_and_finds_a_rejected_payment(world) -> None:  # type: ignore[no-untyped-def]
    driver, console = world["driver"], world["console"]
    rejected = await _payments(world)
    _sign_in(world, "oscar")

    positions = driver.find_element(By.ID, "positions").text
    assert "Acme Wallet" in positions and "EUR" in positions  # partners by name against their caps

    driver.get(f"{console}/windows?currency=EUR")
    open_row = driver.find_element(By.CSS_SELECTOR, '#windows tr[data-state="OPEN"]')
    window = open_row.get_attribute("data-window")
    assert driver.find_elements(By.CSS_SELECTOR, f'#window-chart rect.bar[data-window="{window}"]')
    _click_in_row(driver, window, "button.close-window", console)
    assert f"Closed {window}" in driver.find_element(By.ID, "notice").text
    assert _row(driver, window).get_attribute("data-state") == "CLOSED"

    _click_in_row(driver, window, "button.settle-window", console)
    assert f"Settled {window}" in driver.find_element(By.ID, "notice").text
    assert _row(driver, window).get_attribute("data-state") == "SETTLED"
    bar = driver.find_element(By.CSS_SELECTOR, f'#window-chart rect.bar[data-window="{window}"]')
    assert bar.get_attribute("data-state") == "SETTLED"

    _click_in_row(driver, window, "button.reconcile-window", console)
    assert "clean, the ledger and the settlement positions agree" in driver.find_element(By.ID, "reconciliation").text

    driver.find_element(By.ID, "nav-payments").click()
    row = driver.find_element(By.CSS_SELECTOR, f'#rejected tr[data-payment="{rejected}"]')
    assert row.find_element(By.CLASS_NAME, "reason").text == "INSUFFICIENT_FUNDS"

    driver.get(f"{console}/audit?service=console&actor=operator:oscar&action=console.window.")
    results = driver.find_element(By.ID, "audit-results").text
    for action in ("console.window.close", "console.window.settle", "console.window.reconcile"):
        assert action in results
    assert window in results and "operator:oscar" in results
    # The settlement service's own trail shows the console's client made the change.
    driver.get(f"{console}/audit?service=settlement&action=window.close&actor=service:console")
    settlement_trail = driver.find_element(By.ID, "audit-results").text
    assert window.removeprefix("settlementWindows/") in settlement_trail and "service:console" in settlement_trail
    # The review queue: the payment service's held payments (none under the shipped rules here).
    driver.get(f"{console}/review")
    assert "Nothing is held for review." in driver.find_element(By.ID, "held").text


async def test_a_read_only_operator_sees_no_actions_and_is_refused_when_posting_one(world) -> None:  # type: ignore[no-untyped-def]
    driver, console = world["driver"], world["console"]
    _sign_in(world, "rita")
    driver.get(f"{console}/windows?currency=EUR")
    assert "read-only" in driver.find_element(By.ID, "read-only-note").text
    assert not driver.find_elements(By.CSS_SELECTOR, "button.close-window, button.settle-window")
    before = [(r.get_attribute("data-window"), r.get_attribute("data-state")) for r in _rows(driver)]

    # The form posted anyway, with rita's own session and CSRF token: refused, nothing closed.
    cookie = driver.get_cookie("console_session")["value"]
    csrf = driver.find_element(By.CSS_SELECTOR, 'form[action="/sign-out"] input[name="csrf_token"]')
    async with httpx.AsyncClient(base_url=console, cookies={"console_session": cookie}) as http:
        refused = await http.post("/windows/close", data={"csrf_token": csrf.get_attribute("value"), "currency": "EUR"})
        assert refused.status_code == 403
        forged = await http.post("/windows/close", data={"csrf_token": "not-the-token", "currency": "EUR"})
        assert forged.status_code == 403 and "expired" in forged.text
    driver.get(f"{console}/windows?currency=EUR")
    assert [(r.get_attribute("data-window"), r.get_attribute("data-state")) for r in _rows(driver)] == before

    driver.get(f"{console}/audit?service=console&actor=operator:rita")
    results = driver.find_element(By.ID, "audit-results").text
    assert "console.window.close" in results and "DENIED" in results

    driver.find_element(By.ID, "sign-out").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == "/sign-in")
    driver.get(f"{console}/partners")
    assert urlsplit(driver.current_url).path == "/sign-in"
