"""The redirect journey's cast: a local mesh with the bank's web app (real processes), a
wallet (the Python SDK through the gateway, with its own callback server), customers made
for each test, and Debian's headless Chromium driven by Selenium."""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from meshcli.operator import Operator
from meshlib import totp
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, account_pb2
from openbank.common.v1 import money_pb2
from openbank.identity.v1 import (
    consent_pb2,
    consent_pb2_grpc,
    customer_pb2,
    customer_pb2_grpc,
    partner_pb2,
    partner_pb2_grpc,
)

PASSWORD = "browser-test-password-1"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def chrome():  # type: ignore[no-untyped-def]
    """Headless Debian Chromium under Selenium (missing: fail in CI, skip elsewhere)."""
    binary = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    driver_path = shutil.which("chromedriver") or (CHROMEDRIVER if os.path.exists(CHROMEDRIVER) else None)
    if not binary or not driver_path:
        message = "Debian's chromium and chromium-driver are not installed (make test-servers installs them)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=420,900")  # a phone's width
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    driver.set_page_load_timeout(20)
    return driver


class _Callback(BaseHTTPRequestHandler):
    hits: list[str]

    def do_GET(self) -> None:
        self.server.hits.append(self.path)  # type: ignore[attr-defined]
        body = b"<!doctype html><title>Wallet</title><h1 id='wallet'>Back in the wallet</h1>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class WalletCallback:
    """The wallet's redirect URI: an HTTP server on 127.0.0.1 that records what arrives."""

    server: ThreadingHTTPServer = field(default_factory=lambda: ThreadingHTTPServer(("127.0.0.1", 0), _Callback))

    def __post_init__(self) -> None:
        self.server.hits = []  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/callback"

    @property
    def hits(self) -> list[str]:
        return self.server.hits  # type: ignore[attr-defined]

    def last_query(self) -> dict[str, str]:
        """The query of the last redirect that reached the wallet."""
        deadline = time.monotonic() + 5
        while not self.redirects() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.redirects(), "nothing reached the wallet"
        return {k: v[0] for k, v in parse_qs(urlsplit(self.redirects()[-1]).query).items()}

    def redirects(self) -> list[str]:
        """What arrived at the redirect URI's path (not the browser's favicon request)."""
        return [hit for hit in self.hits if urlsplit(hit).path == "/callback"]

    def close(self) -> None:
        self.server.shutdown()


@dataclass
class WebCustomer:
    """A customer made for one test, with one current account and its authenticator."""

    name: str
    username: str
    account: str
    seed: bytes
    _used: set[int] = field(default_factory=set)

    def code(self) -> str:
        """A one-time code never handed out before (identity accepts each step once)."""
        step = totp.time_step(time.time())
        while step in self._used or (self._used and step <= max(self._used)):
            step += 1
        if step > totp.time_step(time.time()) + 1:
            time.sleep(30)
            return self.code()
        self._used.add(step)
        return totp.hotp(self.seed, step)


async def make_customer(operator: Operator, *, accounts: int = 1) -> WebCustomer:
    """A fresh customer with ``accounts`` current accounts."""
    admin = await operator.metadata()
    username = f"web-{uuid.uuid4().hex[:10]}"
    created = await customer_pb2_grpc.CustomerServiceStub(operator.channel("identity")).CreateCustomer(
        customer_pb2.CreateCustomerRequest(
            request_id=uuid.uuid4().hex, username=username, password=PASSWORD, display_name="Web Customer"
        ),
        metadata=admin,
    )
    stub = account_admin_pb2_grpc.AccountAdminServiceStub(operator.channel("account"))
    names = []
    for index in range(accounts):
        opened = await stub.OpenAccount(
            account_admin_pb2.OpenAccountRequest(
                request_id=uuid.uuid4().hex,
                customer=created.customer.name,
                currency_code="EUR",
                type=account_pb2.ACCOUNT_TYPE_CURRENT,
                overdraft_limit=money_pb2.Money(currency_code="EUR", minor_units=0),
                display_name=f"Everyday {index + 1}",
            ),
            metadata=admin,
        )
        names.append(opened.account.name)
    return WebCustomer(created.customer.name, username, names[0], totp.from_base32(created.totp_secret))


async def register_redirect_uri(operator: Operator, partner: str, uri: str) -> None:
    """The operator registers the wallet's redirect URI (exact)."""
    await partner_pb2_grpc.PartnerServiceStub(operator.channel("identity")).UpdatePartner(
        partner_pb2.UpdatePartnerRequest(
            request_id=uuid.uuid4().hex, name=partner, redirect_uris=partner_pb2.RedirectUriSet(redirect_uris=[uri])
        ),
        metadata=await operator.metadata(),
    )


async def fund(operator: Operator, account: str, minor_units: int) -> None:
    """The operator credits ``account`` from the bank's equity."""
    await account_admin_pb2_grpc.AccountAdminServiceStub(operator.channel("account")).FundAccount(
        account_admin_pb2.FundAccountRequest(
            request_id=uuid.uuid4().hex,
            account=account,
            amount=money_pb2.Money(currency_code="EUR", minor_units=minor_units),
            description="test funds",
        ),
        metadata=await operator.metadata(),
    )


async def authorise(operator: Operator, consent: str, customer: WebCustomer) -> str:
    """The customer authorises ``consent`` for their first account (the bank app's own rpc,
    to set up a test quickly); the authorization code."""
    answer = await consent_pb2_grpc.ConsentServiceStub(operator.channel("identity")).AuthoriseConsent(
        consent_pb2.AuthoriseConsentRequest(
            request_id=uuid.uuid4().hex,
            name=consent,
            username=customer.username,
            password=PASSWORD,
            one_time_code=customer.code(),
            accounts=[customer.account],
        ),
        metadata=await operator.bank_app_metadata(),
    )
    return answer.authorization_code


def wait_for_url(driver, arrived, *, seconds: float = 10.0) -> str:  # type: ignore[no-untyped-def]
    """The URL once ``arrived(url)`` holds and that page has loaded: a click that posts a form
    returns before the browser may have followed the redirect to the next page."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, seconds).until(
            lambda d: arrived(d.current_url) and d.execute_script("return document.readyState") == "complete"
        )
    except TimeoutException:
        raise AssertionError(f"still at {driver.current_url}") from None
    return str(driver.current_url)


def wait_for_next_page(driver, old, *, seconds: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Wait until the page holding the element ``old`` is replaced and the next one has loaded:
    a form posted and redirected back to the same address leaves no new URL to wait for, and
    until the answer arrives the browser still shows the old page."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        WebDriverWait(driver, seconds).until(
            lambda d: (
                expected_conditions.staleness_of(old)(d)
                and d.execute_script("return document.readyState") == "complete"
            )
        )
    except TimeoutException:
        raise AssertionError(f"still on the same page at {driver.current_url}") from None
