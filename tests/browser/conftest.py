"""One local mesh with the bank's web app and the operator console, one wallet and one
headless Chromium for every browser test of a worker (starting them is most of the time these tests take)."""

from __future__ import annotations

from pathlib import Path

import pytest_asyncio
from openbank_sdk import OpenBankClient

from meshcli.mesh import LocalMesh
from meshcli.operator import Operator
from meshcli.seed import seed_demo_data
from tests.browser.harness import WalletCallback, chrome, register_redirect_uri
from tests.browser.isolation_env import ISOLATION_ENV
from tests.support.servers import free_port


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def world(tmp_path_factory, redis_srv):  # type: ignore[no-untyped-def]
    # The browser first: without it the tests skip (or fail in CI) before a mesh is left running.
    driver = chrome()
    data_dir = tmp_path_factory.mktemp("bankweb") / "data"
    ports = {
        name: free_port() for name in ("identity", "account", "payment", "settlement", "gateway", "bankweb", "console")
    }
    # Per-username sign-in throttle tight enough to test (identity locks after five failures);
    # every test signs in from 127.0.0.1, so the per-address one is loose.
    bankweb_env = {"OBM_BANKWEB_SIGNIN_ATTEMPTS": "6", "OBM_BANKWEB_SIGNIN_ATTEMPTS_PER_ADDRESS": "1000"}
    # Credit lines (test_credit_line.py): the browser world's rules, a day of accrual a second.
    account_env = {
        "OBM_CREDIT_RULES_FILE": str(Path(__file__).parent / "credit_rules_e2e.yaml"),
        "OBM_CREDIT_ACCRUAL_DAYS_PER_SECOND": "1",
        "OBM_CREDIT_ACCRUAL_INTERVAL_SECONDS": "0.25",
    }
    # Redis as in production: the invalidation bus (a customer's change reaches the gateway and
    # the services at once, so it holds from the wallet's next call), sessions, rate limits.
    mesh = LocalMesh(
        data_dir,
        ports=ports,
        quiet=True,
        extra_env={"OBM_REDIS_URL": redis_srv.url},
        child_env={"bankweb": bankweb_env, "account": account_env},
    )
    mesh.child_env.setdefault("payment", {}).update(ISOLATION_ENV)
    operator = wallet = callback = None
    try:
        await mesh.start()
        operator = Operator(data_dir, ports=mesh.ports)
        demo = await seed_demo_data(operator, say=lambda _: None)
        acme = demo["partners"]["acme"]
        callback = WalletCallback()
        await register_redirect_uri(operator, acme["partner"], callback.uri)
        wallet = OpenBankClient.connect(
            f"127.0.0.1:{ports['gateway']}", acme["client_id"], acme["client_secret"], insecure=True
        )
        yield {
            "bank": f"http://127.0.0.1:{ports['bankweb']}",
            "console": f"http://127.0.0.1:{ports['console']}",
            "operator": operator,
            "wallet": wallet,
            "callback": callback,
            "driver": driver,
            "demo": demo,
            "mesh": mesh,
        }
    finally:
        driver.quit()
        if wallet is not None:
            await wallet.close()
        if operator is not None:
            await operator.close()
        if callback is not None:
            callback.close()
        await mesh.stop(grace=10)
