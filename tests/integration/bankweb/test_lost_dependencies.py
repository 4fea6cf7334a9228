"""The bank's customer pages with a lost peer or store, over the real wiring (gRPC channels,
the Redis session store) and a real HTTP server: identity unreachable, or the session store's
Redis gone, answers the bank's 503 error page with a Retry-After, never a 500 or a traceback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr

from bankweb.app import start_bankweb
from bankweb.faults import TITLE
from bankweb.settings import BankWebSettings
from tests.support.servers import free_port


@pytest_asyncio.fixture
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    nothing = f"127.0.0.1:{free_port()}"  # nothing listens here: every peer and Redis are gone
    settings = BankWebSettings(
        bankweb_port=0,
        identity_target=nothing,
        account_target=nothing,
        payment_target=nothing,
        service_client_secret=SecretStr("bankweb-secret-0123456789"),
        redis_url=SecretStr(f"redis://{nothing}/0"),
        bankweb_secure_cookies=False,
    )
    running = await start_bankweb(settings)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{running.port}", timeout=30) as client:
            yield client
    finally:
        await running.stop()


def _is_the_unavailable_page(page: httpx.Response) -> None:
    assert page.status_code == 503, page.text[:500]
    assert page.headers["content-type"].startswith("text/html")
    assert int(page.headers["retry-after"]) >= 1
    assert page.headers["cache-control"] == "no-store"  # the bank's page headers, as every page
    assert TITLE in page.text and "Traceback" not in page.text and "Internal Server Error" not in page.text


@pytest.mark.asyncio
async def test_identity_unreachable_answers_the_503_page(browser: httpx.AsyncClient) -> None:
    # The wallet sent the browser here; opening its request needs identity.
    page = await browser.get("/authorize", params={"client_id": "acme", "request_uri": "urn:ietf:params:oauth:x"})
    _is_the_unavailable_page(page)


@pytest.mark.asyncio
async def test_the_session_store_lost_answers_the_503_page(browser: httpx.AsyncClient) -> None:
    # A returning browser: its session is looked up in Redis first.
    browser.cookies.set("bank_session", "a-session-id-0123456789abcdef")
    page = await browser.get("/authorize", params={"client_id": "acme", "request_uri": "urn:ietf:params:oauth:x"})
    _is_the_unavailable_page(page)
    # Still only the page: the health check, which needs neither, answers.
    assert (await browser.get("/healthz")).status_code == 200
