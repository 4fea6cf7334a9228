"""The decoupled flow (CIBA poll mode) end to end against a local mesh of real processes: the
wallet (the Python SDK through the gateway) starts an authorisation for a customer it names and
polls; in headless Chromium the customer signs in, finds it on the approvals page with the
wallet's binding message and approves it for an account; the wallet's poll returns a session
bound to the consent. Over plain HTTP: a refusal reaches the wallet as ACCESS_DENIED, and the
page's rules hold (CSRF, another customer, an account that is not theirs)."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

import httpx
import pytest
from openbank_sdk import OpenBankClient, OpenBankError
from selenium.webdriver.common.by import By

from openbank.common.v1 import consent_permission_pb2 as permissions
from tests.browser.harness import PASSWORD, WebCustomer, make_customer, wait_for_next_page, wait_for_url

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

READS = (permissions.CONSENT_PERMISSION_READ_ACCOUNTS, permissions.CONSENT_PERMISSION_READ_BALANCES)


async def _quick(seconds: float) -> None:
    """The wallet polls far faster than asked (the bank answers SLOW_DOWN; a decision still arrives)."""
    await asyncio.sleep(min(seconds, 0.3))


async def test_the_customer_approves_on_the_approvals_page_and_the_wallets_poll_gets_tokens(world) -> None:  # type: ignore[no-untyped-def]
    wallet: OpenBankClient = world["wallet"]
    driver, bank = world["driver"], world["bank"]
    customer = await make_customer(world["operator"], accounts=2)
    pending = await wallet.create_consent(READS, reads_per_day=20)
    started = await wallet.start_decoupled_authorization(pending, customer.username, "Acme 7Q4X")
    assert started.interval == 5 and started.expires_in == 600
    polling = asyncio.create_task(wallet.wait_for_decoupled_authorization(started, sleep=_quick))

    driver.delete_all_cookies()
    driver.get(f"{bank}/approvals")
    assert urlsplit(driver.current_url).path == "/sign-in"
    driver.find_element(By.ID, "username").send_keys(customer.username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "one_time_code").send_keys(customer.code())
    driver.find_element(By.ID, "sign-in").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == "/approvals")
    (card,) = driver.find_elements(By.CSS_SELECTOR, "section.card")
    assert "Acme Wallet asks for access" in card.text and "See their balances" in card.text
    assert card.find_element(By.CSS_SELECTOR, ".binding").text == "Acme 7Q4X"
    assert not polling.done()  # still pending while the customer reads
    card.find_elements(By.NAME, "accounts")[1].click()
    card.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
    wait_for_next_page(driver, card)  # posted, then back on /approvals: no new URL to wait for
    notices = driver.find_elements(By.ID, "notice")
    page = driver.find_element(By.TAG_NAME, "body").text
    assert notices and "Approved. Acme Wallet can now use" in notices[0].text, page
    assert driver.find_element(By.ID, "none").text == "Nothing is waiting for your approval."

    session = await asyncio.wait_for(polling, 20)
    assert session.consent == pending.name
    shared = [account.name async for account in session.accounts()]
    assert len(shared) == 1 and shared[0] != customer.account  # exactly the second account, picked


def _http(world) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(base_url=world["bank"], follow_redirects=False, timeout=10)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def _sign_in(client: httpx.AsyncClient, customer: WebCustomer) -> None:
    form = await client.get("/sign-in?next=approvals")
    answer = await client.post(
        "/sign-in",
        data={
            "username": customer.username,
            "password": PASSWORD,
            "one_time_code": customer.code(),
            "csrf_token": _csrf(form.text),
            "next": "approvals",
        },
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/approvals"


async def test_a_refusal_reaches_the_wallet_and_the_page_keeps_its_rules(world) -> None:  # type: ignore[no-untyped-def]
    wallet: OpenBankClient = world["wallet"]
    alice, mallory = await make_customer(world["operator"]), await make_customer(world["operator"])
    pending = await wallet.create_consent(READS)
    started = await wallet.start_decoupled_authorization(pending, alice.username, "Acme R2D2")
    with pytest.raises(OpenBankError) as waiting:
        await wallet.poll_decoupled_authorization(started)
    assert waiting.value.reason == "AUTHORIZATION_PENDING" and waiting.value.retry_after == 5

    async with _http(world) as intruder:
        await _sign_in(intruder, mallory)
        page = await intruder.get("/approvals")
        assert "Acme R2D2" not in page.text and "Nothing is waiting" in page.text
        approval_id = ""
        async with _http(world) as client:
            await _sign_in(client, alice)
            page = await client.get("/approvals")
            found = re.search(r'action="/approvals/([0-9a-f]{32})"', page.text)
            assert found and "Acme R2D2" in page.text
            approval_id, token = found.group(1), _csrf(page.text)
            # Mallory cannot decide alice's request, whatever she posts.
            answer = await intruder.post(
                f"/approvals/{approval_id}",
                data={"csrf_token": _csrf((await intruder.get("/approvals")).text), "decision": "approve"},
            )
            assert answer.status_code == 404
            # No CSRF token, another site, or an account that is not alice's: refused.
            assert (await client.post(f"/approvals/{approval_id}", data={"decision": "refuse"})).status_code == 403
            cross = await client.post(
                f"/approvals/{approval_id}",
                data={"decision": "refuse", "csrf_token": token},
                headers={"Sec-Fetch-Site": "cross-site"},
            )
            assert cross.status_code == 403
            foreign = await client.post(
                f"/approvals/{approval_id}",
                data={"decision": "approve", "csrf_token": token, "accounts": mallory.account},
            )
            assert foreign.status_code == 400 and "Choose at least one of your accounts" in foreign.text
            refused = await client.post(f"/approvals/{approval_id}", data={"decision": "refuse", "csrf_token": token})
            assert refused.status_code == 303 and refused.headers["location"] == "/approvals"
            assert "Refused. Acme Wallet was told no." in (await client.get("/approvals")).text

    with pytest.raises(OpenBankError) as denied:
        await wallet.wait_for_decoupled_authorization(started, sleep=_quick)
    assert denied.value.reason == "ACCESS_DENIED"
    assert (await wallet.get_consent(pending.name)).state == 3  # CONSENT_STATE_REJECTED
