"""The redirect flow end to end in a real headless Chromium (Debian's, under Selenium), against
a local mesh of real processes with the bank's web app: the wallet (the Python SDK through
the gateway) pushes its request, the customer signs in and approves or refuses at the bank,
the browser lands on the wallet's registered redirect URI, the wallet gets its token.

The security tests speak plain HTTP to the same web app (what an attacker's script would do):
CSRF, session fixation, open redirect, a replayed request_uri, a code used twice, brute force.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from openbank_sdk import OpenBankClient, OpenBankError, money
from selenium.webdriver.common.by import By

from openbank.common.v1 import consent_permission_pb2 as permissions
from tests.browser.harness import PASSWORD, WebCustomer, make_customer, wait_for_next_page, wait_for_url

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

ISSUER = "https://identity.openbank.local"
READS = (permissions.CONSENT_PERMISSION_READ_ACCOUNTS, permissions.CONSENT_PERMISSION_READ_BALANCES)


async def _push(world, *, state: str = ""):  # type: ignore[no-untyped-def]
    wallet: OpenBankClient = world["wallet"]
    pending = await wallet.create_consent(READS, per_payment_limit=money(100_000, "EUR"), reads_per_day=50)
    pushed = await wallet.push_authorization_request(pending, world["callback"].uri, state=state)
    return pending, pushed


def _sign_in(driver, customer: WebCustomer, *, password: str = PASSWORD, code: str | None = None) -> None:  # type: ignore[no-untyped-def]
    driver.find_element(By.ID, "username").send_keys(customer.username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "one_time_code").send_keys(code or customer.code())
    button = driver.find_element(By.ID, "sign-in")
    button.click()
    wait_for_next_page(driver, button)  # the consent page (or the sign-in page again, refused)


async def test_the_customer_approves_and_the_wallet_gets_a_token_for_the_account_picked(world) -> None:  # type: ignore[no-untyped-def]
    driver, callback = world["driver"], world["callback"]
    customer = await make_customer(world["operator"], accounts=2)
    pending, pushed = await _push(world)
    driver.delete_all_cookies()
    driver.get(pushed.url(world["bank"]))
    assert urlsplit(driver.current_url).path == "/authorize/sign-in"
    assert "Acme Wallet" in driver.page_source
    _sign_in(driver, customer)
    assert urlsplit(driver.current_url).path == "/authorize/consent"
    text = driver.find_element(By.TAG_NAME, "main").text
    assert "Share your accounts with Acme Wallet?" in text
    assert "See their balances" in text and "EUR 1,000.00 per payment" in text.replace("At most ", "")
    boxes = driver.find_elements(By.NAME, "accounts")
    assert len(boxes) == 2
    boxes[0].click()
    driver.find_element(By.ID, "approve").click()

    assert wait_for_url(driver, lambda url: url.startswith(callback.uri + "?"))
    assert driver.find_element(By.ID, "wallet").text == "Back in the wallet"
    query = callback.last_query()
    assert query["state"] == pushed.state and query["iss"] == ISSUER and query["code"]
    assert "error" not in query
    session = await world["wallet"].exchange_code(query["code"], pending.pkce.verifier)
    shared = [account.name async for account in session.accounts()]
    assert shared == [customer.account]  # exactly the account the customer picked

    # The code works once (RFC 6749 4.1.2).
    with pytest.raises(OpenBankError) as reused:
        await world["wallet"].exchange_code(query["code"], pending.pkce.verifier)
    assert reused.value.reason == "INVALID_GRANT"


async def test_the_customer_refuses_and_the_wallet_hears_access_denied(world) -> None:  # type: ignore[no-untyped-def]
    driver, callback = world["driver"], world["callback"]
    customer = await make_customer(world["operator"])
    pending, pushed = await _push(world)
    driver.delete_all_cookies()
    driver.get(pushed.url(world["bank"]))
    _sign_in(driver, customer)
    driver.find_element(By.ID, "refuse").click()
    assert wait_for_url(driver, lambda url: url.startswith(callback.uri + "?"))
    query = callback.last_query()
    assert query == {"error": "access_denied", "state": pushed.state, "iss": ISSUER}
    consent = await world["wallet"].get_consent(pending.name)
    assert consent.state == 3  # CONSENT_STATE_REJECTED


async def test_a_wrong_redirect_uri_is_refused_before_any_page(world) -> None:  # type: ignore[no-untyped-def]
    wallet: OpenBankClient = world["wallet"]
    pending = await wallet.create_consent(READS)
    for wrong in ("https://evil.example/callback", world["callback"].uri + "/x", world["callback"].uri + "?a=b"):
        with pytest.raises(OpenBankError) as refused:
            await wallet.push_authorization_request(pending, wrong)
        assert refused.value.reason == "REDIRECT_URI_NOT_REGISTERED"
    # Without a pushed request there is nothing to open: the bank shows an error and stays put.
    driver = world["driver"]
    driver.get(f"{world['bank']}/authorize?client_id=x&request_uri=urn:ietf:params:oauth:request_uri:forged")
    assert urlsplit(driver.current_url).netloc == urlsplit(world["bank"]).netloc
    assert driver.find_element(By.ID, "error-title").text == "This link has expired or was already used"


# ---- security, over plain HTTP --------------------------------------------------------------


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token in the form"
    return found.group(1)


async def _open(world, client: httpx.AsyncClient):  # type: ignore[no-untyped-def]
    pending, pushed = await _push(world)
    opened = await client.get(pushed.url(world["bank"]))
    assert opened.status_code == 303 and opened.headers["location"] == "/authorize/sign-in"
    form = await client.get("/authorize/sign-in")
    return pending, pushed, _csrf(form.text)


def _http(world) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(base_url=world["bank"], follow_redirects=False, timeout=10)


async def test_forms_without_the_csrf_token_or_from_another_site_are_refused(world) -> None:  # type: ignore[no-untyped-def]
    customer = await make_customer(world["operator"])
    async with _http(world) as client:
        _, _, token = await _open(world, client)
        fields = {"username": customer.username, "password": PASSWORD, "one_time_code": customer.code()}
        missing = await client.post("/authorize/sign-in", data=fields)
        assert missing.status_code == 403
        wrong = await client.post("/authorize/sign-in", data={**fields, "csrf_token": token[:-2] + "xx"})
        assert wrong.status_code == 403
        cross_site = await client.post(
            "/authorize/sign-in", data={**fields, "csrf_token": token}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert cross_site.status_code == 403
        # The same form with its token passes (a fresh code: each is accepted once).
        good = await client.post(
            "/authorize/sign-in", data={**fields, "csrf_token": token, "one_time_code": customer.code()}
        )
        assert good.status_code == 303 and good.headers["location"] == "/authorize/consent"
        consent_page = await client.get("/authorize/consent")
        decision = {"decision": "approve", "accounts": customer.account}
        assert (await client.post("/authorize/consent", data=decision)).status_code == 403
        assert consent_page.status_code == 200


async def test_signing_in_gives_a_new_session_and_the_planted_one_is_worthless(world) -> None:  # type: ignore[no-untyped-def]
    customer = await make_customer(world["operator"])
    async with _http(world) as victim:
        # An attacker's session id planted in the victim's browser is replaced on arrival...
        victim.cookies.set("bank_session", "attacker-chosen-session-id", domain="127.0.0.1")
        _, _, token = await _open(world, victim)
        before = victim.cookies.get("bank_session", domain="127.0.0.1")
        assert before and before != "attacker-chosen-session-id"
        signed_in = await victim.post(
            "/authorize/sign-in",
            data={
                "username": customer.username,
                "password": PASSWORD,
                "one_time_code": customer.code(),
                "csrf_token": token,
            },
        )
        after = signed_in.cookies.get("bank_session")
        assert after and after != before  # ...and again at sign-in
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=lax" in cookie
    async with _http(world) as attacker:
        attacker.cookies.set("bank_session", before)
        stolen = await attacker.get("/authorize/consent")
        assert stolen.status_code == 400 and "nothing to authorise" in stolen.text.lower()


async def test_no_redirect_goes_anywhere_but_the_registered_uri(world) -> None:  # type: ignore[no-untyped-def]
    customer = await make_customer(world["operator"])
    async with _http(world) as client:
        _, pushed = await _push(world)
        evil = "https://evil.example/steal"
        opened = await client.get(pushed.url(world["bank"]) + "&redirect_uri=" + evil)
        assert opened.status_code == 303 and opened.headers["location"] == "/authorize/sign-in"
        token = _csrf((await client.get("/authorize/sign-in")).text)
        signed_in = await client.post(
            "/authorize/sign-in",
            data={
                "username": customer.username,
                "password": PASSWORD,
                "one_time_code": customer.code(),
                "csrf_token": token,
            },
        )
        page = await client.get(signed_in.headers["location"])
        token = _csrf(page.text)
        decided = await client.post(
            "/authorize/consent?redirect_uri=" + evil,
            data={"decision": "refuse", "csrf_token": token, "redirect_uri": evil},
        )
        assert decided.status_code == 303
        location = decided.headers["location"]
        assert location.startswith(world["callback"].uri + "?")
        assert parse_qs(urlsplit(location).query)["state"] == [pushed.state]
        # Headers every page carries.
        for header, value in (
            ("x-frame-options", "DENY"),
            ("referrer-policy", "no-referrer"),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
        ):
            assert page.headers[header] == value
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # An unknown or forged request never redirects.
    async with _http(world) as client:
        for query in (
            "",
            "?client_id=x",
            f"?client_id=x&request_uri=urn:ietf:params:oauth:request_uri:x&redirect_uri={evil}",
        ):
            answer = await client.get("/authorize" + query)
            assert answer.status_code == 400 and "location" not in answer.headers


async def test_a_replayed_request_uri_leads_nowhere(world) -> None:  # type: ignore[no-untyped-def]
    _, pushed = await _push(world)
    async with _http(world) as first:
        assert (await first.get(pushed.url(world["bank"]))).status_code == 303
    async with _http(world) as replay:
        again = await replay.get(pushed.url(world["bank"]))
        assert again.status_code == 400 and "location" not in again.headers
        assert "already used" in again.text


async def test_brute_force_sign_in_locks_the_customer_and_then_is_throttled(world) -> None:  # type: ignore[no-untyped-def]
    customer = await make_customer(world["operator"])
    async with _http(world) as client:
        _, _, token = await _open(world, client)

        async def attempt(password: str, code: str) -> httpx.Response:
            return await client.post(
                "/authorize/sign-in",
                data={"username": customer.username, "password": password, "one_time_code": code, "csrf_token": token},
            )

        for _ in range(5):  # identity locks the customer after five failures in a row
            wrong = await attempt("not the password", "000000")
            assert wrong.status_code == 401 and "did not match" in wrong.text
        locked = await attempt(PASSWORD, customer.code())
        assert locked.status_code == 403 and "locked" in locked.text
        throttled = await attempt(PASSWORD, customer.code())
        assert throttled.status_code == 429
