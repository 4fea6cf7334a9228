#!/usr/bin/env python3
"""Screenshots of the operator console for the operator guide (docs/images/console-*.png).

Starts a throwaway local mesh with the console and demo data, makes a top-up to acme's wallet
and one rejected, then signs in as the local operator oscar in Debian's headless Chromium
at a desktop width: partners against their caps, a settlement window closed and reconciled
(with the history chart), payments in flight and rejected, the audit search.

Usage: .venv/bin/python scripts/console_screenshots.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "libs"), str(ROOT / "gen"), str(ROOT / "sdk")]

from bank_screenshots import GRANTED, browser, free_port  # noqa: E402
from openbank_sdk import OpenBankClient, money  # noqa: E402
from openbank_sdk.sandbox import authenticator  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

from meshcli.console_operators import CREDENTIALS_FILE  # noqa: E402
from meshcli.mesh import LocalMesh  # noqa: E402
from meshcli.operator import Operator  # noqa: E402
from meshcli.seed import DEMO_PASSWORD, seed_demo_data  # noqa: E402
from meshlib import totp  # noqa: E402
from openbank.identity.v1 import consent_pb2, consent_pb2_grpc  # noqa: E402

WIDTH = 1280


def shoot(driver, out: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    """The whole page at a desktop width, as a PNG."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(WIDTH, max(600, min(int(height) + 20, 2400)))
    driver.save_screenshot(str(out / f"console-{name}.png"))
    driver.set_window_size(WIDTH, 900)
    print(f"  {out / f'console-{name}.png'}")


async def main(out: Path) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="console-screenshots-")) / "data"
    names = ("identity", "account", "payment", "settlement", "gateway", "bankweb", "console")
    ports = {name: free_port() for name in names}
    mesh = LocalMesh(data_dir, ports=ports, quiet=True)
    await mesh.start()
    operator = Operator(data_dir, ports=mesh.ports)
    driver = browser()
    driver.set_window_size(WIDTH, 900)
    console = f"http://127.0.0.1:{ports['console']}"
    try:
        demo = await seed_demo_data(operator, say=lambda _: None)
        acme, alice = demo["partners"]["acme"], demo["customers"]["alice"]
        wallet = OpenBankClient.connect(
            f"127.0.0.1:{ports['gateway']}", acme["client_id"], acme["client_secret"], insecure=True
        )
        pending = await wallet.create_consent(GRANTED, per_payment_limit=money(5_000_000, "EUR"))
        answer = await consent_pb2_grpc.ConsentServiceStub(operator.channel("identity")).AuthoriseConsent(
            consent_pb2.AuthoriseConsentRequest(
                request_id="screenshots-consent",
                name=pending.name,
                username="alice",
                password=DEMO_PASSWORD,
                one_time_code=await authenticator(alice["totp_secret"]).next_code(),
                accounts=[alice["account"]],
            ),
            metadata=await operator.bank_app_metadata(),
        )
        session = await wallet.exchange_code(answer.authorization_code, pending.pkce.verifier)
        # Two top-ups settle; the third is more than alice has left (rejected, INSUFFICIENT_FUNDS).
        for _ in range(3):
            await session.create_payment(alice["account"], money(95_000, "EUR"), creditor_wallet=acme["partner"])
        await wallet.close()

        oscar = json.loads((data_dir / CREDENTIALS_FILE).read_text())["oscar"]
        driver.get(f"{console}/sign-in")
        shoot(driver, out, "sign-in")
        driver.find_element(By.ID, "username").send_keys("oscar")
        driver.find_element(By.ID, "password").send_keys(oscar["password"])
        code = totp.totp(totp.from_base32(oscar["totp_secret"]), time.time())
        driver.find_element(By.ID, "one_time_code").send_keys(code)
        driver.find_element(By.ID, "sign-in").click()
        await asyncio.sleep(0.5)
        shoot(driver, out, "partners")
        driver.get(f"{console}/windows?currency=EUR")
        driver.find_element(By.CSS_SELECTOR, "button.close-window").click()
        await asyncio.sleep(0.5)
        driver.find_element(By.CSS_SELECTOR, "button.reconcile-window").click()
        await asyncio.sleep(0.5)
        shoot(driver, out, "windows")
        driver.get(f"{console}/payments")
        shoot(driver, out, "payments")
        driver.get(f"{console}/audit?service=console&actor=operator:oscar")
        shoot(driver, out, "audit")
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
