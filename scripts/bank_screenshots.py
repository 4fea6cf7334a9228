#!/usr/bin/env python3
"""Screenshots of the bank's web pages for the partner guide (docs/images/bank-*.png).

Starts a throwaway local mesh with the bank's web app and demo data, plays a wallet (the Python
SDK) and the sandbox customer alice, and saves what Debian's headless Chromium shows at a
phone's width: sign-in, the consent page of the redirect flow, the approvals page of the
decoupled flow, the consent dashboard and one connection's page.

Usage: .venv/bin/python scripts/bank_screenshots.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "libs"), str(ROOT / "gen"), str(ROOT / "sdk")]

from openbank_sdk import OpenBankClient, money  # noqa: E402
from openbank_sdk.sandbox import authenticator  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from meshcli.mesh import LocalMesh  # noqa: E402
from meshcli.operator import Operator  # noqa: E402
from meshcli.seed import DEMO_PASSWORD, seed_demo_data  # noqa: E402
from openbank.common.v1 import consent_permission_pb2 as permissions  # noqa: E402

GRANTED = (
    permissions.CONSENT_PERMISSION_READ_ACCOUNTS,
    permissions.CONSENT_PERMISSION_READ_BALANCES,
    permissions.CONSENT_PERMISSION_INITIATE_PAYMENTS,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    options.add_argument("--window-size=420,900")
    options.add_argument("--hide-scrollbars")
    return webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)


def shoot(driver: webdriver.Chrome, out: Path, name: str) -> None:
    """The whole page (as tall as its content), as a PNG."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(420, max(600, min(int(height) + 20, 2400)))
    driver.save_screenshot(str(out / f"bank-{name}.png"))
    driver.set_window_size(420, 900)
    print(f"  {out / f'bank-{name}.png'}")


async def sign_in(driver: webdriver.Chrome, secret: str) -> None:
    driver.find_element(By.ID, "username").send_keys("alice")
    driver.find_element(By.ID, "password").send_keys(DEMO_PASSWORD)
    driver.find_element(By.ID, "one_time_code").send_keys(await authenticator(secret).next_code())


async def main(out: Path) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="bank-screenshots-")) / "data"
    ports = {name: free_port() for name in ("identity", "account", "payment", "settlement", "gateway", "bankweb")}
    mesh = LocalMesh(data_dir, ports=ports, quiet=True)
    await mesh.start()
    operator = Operator(data_dir, ports=mesh.ports)
    driver = browser()
    bank = f"http://127.0.0.1:{ports['bankweb']}"
    try:
        demo = await seed_demo_data(operator, say=lambda _: None)
        acme, alice = demo["partners"]["acme"], demo["customers"]["alice"]
        wallet = OpenBankClient.connect(
            f"127.0.0.1:{ports['gateway']}", acme["client_id"], acme["client_secret"], insecure=True
        )
        # The redirect flow: sign-in and the consent page.
        pending = await wallet.create_consent(GRANTED, per_payment_limit=money(50_000, "EUR"), reads_per_day=20)
        pushed = await wallet.push_authorization_request(pending, acme["redirect_uris"][1])
        driver.get(pushed.url(bank))
        shoot(driver, out, "sign-in")
        await sign_in(driver, alice["totp_secret"])
        driver.find_element(By.ID, "sign-in").click()
        driver.find_elements(By.NAME, "accounts")[0].click()
        shoot(driver, out, "consent")
        driver.find_element(By.ID, "approve").click()
        code = dict(part.split("=", 1) for part in driver.current_url.split("?", 1)[1].split("&"))["code"]
        session = await wallet.exchange_code(code, pending.pkce.verifier)
        await session.balance(alice["account"])
        await session.create_payment(alice["account"], money(2_500, "EUR"), creditor_wallet=acme["partner"])
        # The decoupled flow: the approvals page.
        other = await wallet.create_consent(GRANTED[:2], reads_per_day=10)
        await wallet.start_decoupled_authorization(other, "alice", "Acme 4F2K")
        driver.get(f"{bank}/approvals")
        shoot(driver, out, "approvals")
        # The consent dashboard.
        driver.get(f"{bank}/consents")
        shoot(driver, out, "dashboard")
        driver.find_element(By.ID, f"manage-{session.consent.removeprefix('consents/')}").click()
        await asyncio.sleep(0.2)
        shoot(driver, out, "consent-detail")
        await wallet.close()
    finally:
        driver.quit()
        await operator.close()
        await mesh.stop(grace=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    target = parser.parse_args().out
    target.mkdir(parents=True, exist_ok=True)
    asyncio.run(main(target))
