"""The customer's consent dashboard against a local mesh of real processes: in headless Chromium
the customer sees what a connected wallet did and revokes it, and the wallet's very next call
through the gateway is refused; over plain HTTP, pause, resume and a lowered limit take effect
on the wallet's next call, and the pages' security rules hold (sign-in required, CSRF, another
customer's consent, session fixation, no redirect off the site, sign-out)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest
from openbank_sdk import ConsentSession, OpenBankClient, OpenBankError, money
from selenium.webdriver.common.by import By

from openbank.common.v1 import consent_permission_pb2 as permissions
from tests.browser.harness import PASSWORD, WebCustomer, authorise, fund, make_customer, wait_for_url

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

GRANTED = (
    permissions.CONSENT_PERMISSION_READ_ACCOUNTS,
    permissions.CONSENT_PERMISSION_READ_BALANCES,
    permissions.CONSENT_PERMISSION_INITIATE_PAYMENTS,
)


async def _connected(world, customer: WebCustomer, *, per_payment: int = 100_000) -> ConsentSession:  # type: ignore[no-untyped-def]
    """A wallet connected to the customer's first account (a consent authorised, its tokens)."""
    wallet: OpenBankClient = world["wallet"]
    pending = await wallet.create_consent(GRANTED, per_payment_limit=money(per_payment, "EUR"), reads_per_day=50)
    code = await authorise(world["operator"], pending.name, customer)
    return await wallet.exchange_code(code, pending.pkce.verifier)


async def _refused(call) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(OpenBankError) as refused:
        await call
    return refused.value.reason


def _consent_id(session: ConsentSession) -> str:
    return session.consent.removeprefix("consents/")


async def test_the_customer_sees_what_a_wallet_did_revokes_it_and_its_next_call_is_refused(world) -> None:  # type: ignore[no-untyped-def]
    operator, driver, bank = world["operator"], world["driver"], world["bank"]
    customer = await make_customer(operator)
    await fund(operator, customer.account, 50_000)
    session = await _connected(world, customer)
    # The wallet looks around and pays itself a top-up.
    await session.balance(customer.account)
    await session.balance(customer.account)
    assert [a.name async for a in session.accounts()] == [customer.account]
    acme = world["demo"]["partners"]["acme"]["partner"]
    await session.create_payment(customer.account, money(1_234, "EUR"), creditor_wallet=acme)

    driver.delete_all_cookies()
    driver.get(f"{bank}/consents")
    assert urlsplit(driver.current_url).path == "/sign-in"  # signed-in pages need a sign-in
    driver.find_element(By.ID, "username").send_keys(customer.username)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    driver.find_element(By.ID, "one_time_code").send_keys(customer.code())
    driver.find_element(By.ID, "sign-in").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == "/consents")
    card = driver.find_element(By.ID, f"consent-{_consent_id(session)}").text
    assert "Acme Wallet" in card and "Active" in card and "Everyday 1" in card
    assert "See their balances" in card and "Make payments from them" in card

    driver.find_element(By.ID, f"manage-{_consent_id(session)}").click()
    page = driver.find_element(By.TAG_NAME, "main").text
    assert "EUR 1,000.00" in page  # its per-payment limit
    assert "EUR 12.34" in driver.find_element(By.ID, "payments").text
    reads = driver.find_element(By.ID, "reads").text
    assert re.search(r"Checked a balance 2\b", reads), reads
    assert re.search(r"Looked at your accounts 1\b", reads), reads

    driver.find_element(By.ID, "revoke").click()
    assert "Stop sharing with Acme Wallet?" in driver.find_element(By.TAG_NAME, "h1").text
    driver.find_element(By.ID, "confirm-revoke").click()
    wait_for_url(driver, lambda url: urlsplit(url).path == "/consents")
    assert "Acme Wallet can no longer use" in driver.find_element(By.ID, "notice").text
    assert "Revoked" in driver.find_element(By.ID, "ended").text

    # The wallet's very next call through the gateway is refused.
    assert await _refused(session.balance(customer.account)) == "CONSENT_REVOKED"
    assert (await world["wallet"].get_consent(session.consent)).state == 4  # CONSENT_STATE_REVOKED


# ---- over plain HTTP --------------------------------------------------------------------------


def _http(world) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(base_url=world["bank"], follow_redirects=False, timeout=10)


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def _sign_in(client: httpx.AsyncClient, customer: WebCustomer, next_page: str = "consents") -> httpx.Response:
    form = await client.get("/sign-in")
    assert form.status_code == 200
    return await client.post(
        "/sign-in",
        data={
            "username": customer.username,
            "password": PASSWORD,
            "one_time_code": customer.code(),
            "csrf_token": _csrf(form.text),
            "next": next_page,
        },
    )


async def _page(client: httpx.AsyncClient, consent_id: str) -> tuple[str, str]:
    page = await client.get(f"/consents/{consent_id}")
    assert page.status_code == 200, page.text
    return page.text, _csrf(page.text)


async def test_pause_resume_and_a_lower_limit_hold_from_the_wallets_next_call(world) -> None:  # type: ignore[no-untyped-def]
    operator = world["operator"]
    customer = await make_customer(operator)
    await fund(operator, customer.account, 50_000)
    session = await _connected(world, customer)
    consent_id = _consent_id(session)
    acme = world["demo"]["partners"]["acme"]["partner"]
    async with _http(world) as client:
        signed_in = await _sign_in(client, customer)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/consents"

        _, token = await _page(client, consent_id)
        paused = await client.post(f"/consents/{consent_id}/pause", data={"csrf_token": token})
        assert paused.status_code == 303 and paused.headers["location"] == f"/consents/{consent_id}"
        assert await _refused(session.balance(customer.account)) == "CONSENT_PAUSED"
        text, token = await _page(client, consent_id)
        assert "Paused. Acme Wallet cannot use this connection" in text and 'id="resume"' in text
        again = await client.post(f"/consents/{consent_id}/pause", data={"csrf_token": token})
        assert again.status_code == 409 and "already done" in again.text

        resumed = await client.post(f"/consents/{consent_id}/resume", data={"csrf_token": token})
        assert resumed.status_code == 303
        assert (await session.balance(customer.account)).available.minor_units == 50_000

        lowered = await client.post(
            f"/consents/{consent_id}/limits", data={"csrf_token": token, "per_payment_limit": "5.00"}
        )
        assert lowered.status_code == 303
        text, token = await _page(client, consent_id)
        assert "Limits lowered for Acme Wallet." in text and "EUR 5.00" in text
        assert (
            await _refused(session.create_payment(customer.account, money(600, "EUR"), creditor_wallet=acme))
            == "PAYMENT_LIMIT_EXCEEDED"
        )
        await session.create_payment(customer.account, money(500, "EUR"), creditor_wallet=acme)

        # A limit can only go down here; nonsense is refused with a message.
        raised = await client.post(
            f"/consents/{consent_id}/limits", data={"csrf_token": token, "per_payment_limit": "2000"}
        )
        assert raised.status_code == 409 and "can only be lowered" in raised.text
        for fields in ({"per_payment_limit": "-3"}, {"reads_per_day": "ten"}, {}):
            bad = await client.post(f"/consents/{consent_id}/limits", data={"csrf_token": token, **fields})
            assert bad.status_code == 400, fields
        assert "EUR 5.00" in (await _page(client, consent_id))[0]


async def test_the_dashboards_forms_and_pages_keep_their_security_rules(world) -> None:  # type: ignore[no-untyped-def]
    operator = world["operator"]
    alice, mallory = await make_customer(operator), await make_customer(operator)
    session = await _connected(world, alice)
    consent_id = _consent_id(session)
    own = await _connected(world, mallory)  # mallory has a connection of her own
    async with _http(world) as anonymous:
        answer = await anonymous.get("/consents")
        assert answer.status_code == 303 and answer.headers["location"] == "/sign-in?next=consents"
        answer = await anonymous.get(f"/consents/{consent_id}")
        assert answer.status_code == 303 and urlsplit(answer.headers["location"]).path == "/sign-in"
        assert (await anonymous.post(f"/consents/{consent_id}/revoke", data={})).status_code == 403

    async with _http(world) as client:
        # A planted session id is replaced, and the one before sign-in is worthless after it.
        client.cookies.set("bank_session", "attacker-chosen-session-id", domain="127.0.0.1")
        form = await client.get("/sign-in")
        before = form.cookies.get("bank_session")
        assert before and before != "attacker-chosen-session-id"
        signed_in = await client.post(
            "/sign-in",
            data={
                "username": alice.username,
                "password": PASSWORD,
                "one_time_code": alice.code(),
                "csrf_token": _csrf(form.text),
                "next": "https://evil.example/steal",
            },
        )
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/consents"  # never off the site
        after = signed_in.cookies.get("bank_session")
        assert after and after != before
        async with _http(world) as stale:
            stale.cookies.set("bank_session", before)
            assert (await stale.get("/consents")).status_code == 303

        # CSRF: without the token, with a wrong one, or sent by another site: refused, nothing changes.
        _, token = await _page(client, consent_id)
        for data, headers in (
            ({}, {}),
            ({"csrf_token": token[:-2] + "xx"}, {}),
            ({"csrf_token": token}, {"Sec-Fetch-Site": "cross-site"}),
        ):
            refused = await client.post(f"/consents/{consent_id}/revoke", data=data, headers=headers)
            assert refused.status_code == 403
        await session.balance(alice.account)  # still works

        # Sign-out ends the session.
        await client.post("/sign-out", data={"csrf_token": token})
        assert (await client.get("/consents")).status_code == 303

    async with _http(world) as intruder:
        # Another customer: alice's consent does not exist for them, whatever they post.
        assert (await _sign_in(intruder, mallory)).status_code == 303
        listing = await intruder.get("/consents")
        assert consent_id not in listing.text and _consent_id(own) in listing.text
        assert (await intruder.get(f"/consents/{consent_id}")).status_code == 404
        token = _csrf(listing.text)
        for action in ("pause", "revoke"):
            answer = await intruder.post(f"/consents/{consent_id}/{action}", data={"csrf_token": token})
            assert answer.status_code == 404, action
        assert (await intruder.get("/consents/..%2F..%2Fetc")).status_code == 404
    await session.balance(alice.account)  # alice's wallet never noticed
    await own.balance(mallory.account)  # nor did mallory's own connection change
