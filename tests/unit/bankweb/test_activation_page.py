"""The new customer's activation page (bankweb/activation.py) over a fake identity."""

from __future__ import annotations

import re

import httpx
from starlette.applications import Starlette

from bankweb.activation import Activated, ActivationPages
from bankweb.sessions import MemorySessionStore
from meshlib.errors import InvalidArgument, PermissionDenied, Unavailable

APPLICATION = "0123456789abcdef0123456789abcdef"


CUSTOMER_CODE = "12345678"


class FakeIdentity:
    """Identity's ActivateCustomer: the link's code, then the customer's code (5 wrong lock)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []
        self.used = False
        self.down = False
        self.wrong = 0

    async def activate(self, application_id: str, code: str, customer_code: str, password: str) -> Activated:
        self.calls.append((application_id, code, customer_code, password))
        if self.down:
            raise Unavailable("identity did not answer")
        if len(password) < 12:
            raise InvalidArgument.field("password", "too short")
        if self.used or code != "the-code":
            raise PermissionDenied("no", reason="ACTIVATION_CODE_INVALID")
        if self.wrong >= 5:
            raise PermissionDenied("locked", reason="ACTIVATION_LOCKED")
        if customer_code != CUSTOMER_CODE:
            self.wrong += 1
            if self.wrong >= 5:
                raise PermissionDenied("locked", reason="ACTIVATION_LOCKED")
            raise PermissionDenied(
                "no", reason="ACTIVATION_CUSTOMER_CODE_INVALID", metadata={"attempts_left": str(5 - self.wrong)}
            )
        self.used = True
        return Activated("jana.novakova.0123abcd", "otpauth://totp/Bank:jana?secret=ABC", "ABC")


def browser(identity: FakeIdentity) -> httpx.AsyncClient:
    pages = ActivationPages(identity, MemorySessionStore(), secure_cookies=False)
    app = Starlette(routes=pages.routes())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bank.test")


async def form(client: httpx.AsyncClient, code: str = "the-code") -> str:
    link = await client.get(f"/activate/{APPLICATION}?code={code}")
    assert link.status_code == 303 and link.headers["location"] == f"/activate/{APPLICATION}"
    page = await client.get(link.headers["location"])
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    found = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


async def post(
    client: httpx.AsyncClient,
    csrf: str,
    password: str,
    again: str | None = None,
    site: str = "same-origin",
    customer_code: str | None = CUSTOMER_CODE,
) -> httpx.Response:
    data = {"csrf_token": csrf, "password": password, "password_again": password if again is None else again}
    if customer_code is not None:
        data["customer_code"] = customer_code
    return await client.post(f"/activate/{APPLICATION}", data=data, headers={"sec-fetch-site": site})


async def test_the_enrolment_is_shown_once_and_the_link_then_leads_nowhere() -> None:
    identity = FakeIdentity()
    client = browser(identity)
    answer = await post(client, await form(client), "a long password of hers")
    assert answer.status_code == 200 and "otpauth://totp/Bank:jana?secret=ABC" in answer.text
    assert identity.calls == [(APPLICATION, "the-code", CUSTOMER_CODE, "a long password of hers")]
    assert (await client.get(f"/activate/{APPLICATION}")).status_code == 403  # the session is gone
    again = await post(client, await form(client), "another long password")
    assert again.status_code == 403 and "otpauth" not in again.text


async def test_a_cross_site_post_or_another_token_reaches_nothing() -> None:
    identity = FakeIdentity()
    client = browser(identity)
    csrf = await form(client)
    assert (await post(client, csrf, "a long password of hers", site="cross-site")).status_code == 403
    assert (await post(client, "not-the-token", "a long password of hers")).status_code == 403
    assert identity.calls == []


async def test_the_form_asks_again_for_differing_or_short_passwords() -> None:
    identity = FakeIdentity()
    client = browser(identity)
    csrf = await form(client)
    differing = await post(client, csrf, "a long password of hers", again="a long password of his")
    assert differing.status_code == 400 and "differ" in differing.text
    assert identity.calls == []
    short = await post(client, csrf, "short")
    assert short.status_code == 400 and "12 characters" in short.text
    # Still usable after a correction.
    assert (await post(client, csrf, "a long password of hers")).status_code == 200


async def test_no_page_without_the_link_or_for_a_malformed_application() -> None:
    client = browser(FakeIdentity())
    assert (await client.get(f"/activate/{APPLICATION}")).status_code == 403
    assert (await client.get("/activate/not-an-id?code=x")).status_code == 403


async def test_identity_not_answering_leaves_the_form_to_send_again() -> None:
    identity = FakeIdentity()
    identity.down = True
    client = browser(identity)
    csrf = await form(client)
    down = await post(client, csrf, "a long password of hers")
    assert down.status_code == 503 and "Send it again" in down.text and "otpauth" not in down.text
    identity.down = False
    again = await post(client, csrf, "a long password of hers")
    assert again.status_code == 200 and "otpauth://totp/Bank:jana?secret=ABC" in again.text


async def test_the_form_asks_for_the_banks_code_and_without_it_sets_nothing() -> None:
    identity = FakeIdentity()
    client = browser(identity)
    page_link = await client.get(f"/activate/{APPLICATION}?code=the-code")
    page = await client.get(page_link.headers["location"])
    assert 'name="customer_code"' in page.text and "otpauth" not in page.text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert csrf is not None
    missing = await post(client, csrf.group(1), "a long password of hers", customer_code=None)
    assert missing.status_code == 400 and "activation code" in missing.text and "otpauth" not in missing.text
    assert identity.calls == []  # nothing reached identity without the code


async def test_wrong_codes_say_how_many_are_left_then_activation_is_locked() -> None:
    identity = FakeIdentity()
    client = browser(identity)
    csrf = await form(client)
    for left in (4, 3, 2, 1):
        wrong = await post(client, csrf, "a long password of hers", customer_code="00000000")
        assert wrong.status_code == 400 and f"Attempts left: {left}" in wrong.text and "otpauth" not in wrong.text
    locked = await post(client, csrf, "a long password of hers", customer_code="00000000")
    assert locked.status_code == 403 and "Activation is locked" in locked.text and "Contact the bank" in locked.text
    # The session is gone: even the right code is not taken on this page any more.
    after = await post(client, csrf, "a long password of hers")
    assert after.status_code == 403 and "otpauth" not in after.text
