"""A second, independent client: the wallet's core flow driven from Node.js.

examples/node-wallet/wallet.mjs is built from the .proto files alone (@grpc/grpc-js +
@grpc/proto-loader, google.rpc.Status decoded from googleapis' own protos), so these tests
prove the contract stands on its own, outside Python. The mesh runs the way `make up` runs it:
five processes, demo data seeded.

Without `node` on PATH the tests skip, except with CI=true, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from meshcli.mesh import LocalMesh
from meshcli.operator import Operator
from meshcli.seed import seed_demo_data
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

WALLET_DIR = Path(__file__).resolve().parents[2] / "examples" / "node-wallet"
IN_CI = os.environ.get("CI", "").lower() == "true"
CORE_STEPS = [
    "issue_token",
    "create_consent",
    "authorise_consent",
    "exchange_code",
    "list_accounts",
    "get_balance",
    "confirm_funds",
    "create_payment",
    "get_payment",
    "done",
]
TOP_UP_MINOR_UNITS = 1500


def _node_or_skip() -> str:
    """The node binary; skip without it, but never in CI."""
    node = shutil.which("node")
    if node is None:
        message = "node is not installed: the Node.js client (examples/node-wallet) cannot run"
        if IN_CI:
            pytest.fail(f"CI=true: {message}")
        pytest.skip(message)
    return node


def _install_wallet_dependencies() -> None:
    """`npm ci` (the pinned lock file) once, when node_modules is missing."""
    if (WALLET_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("node is installed but npm is not: cannot install examples/node-wallet")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=WALLET_DIR, check=True, capture_output=True, timeout=300)


@pytest_asyncio.fixture(loop_scope="module", scope="module", params=["batched", "plain"])
async def mesh_and_demo(request, tmp_path_factory):  # type: ignore[no-untyped-def]
    """The local mesh on free ports with its demo data, with the payment service's speed-up
    adapters and without (OBM_PAYMENT_BATCHING)."""
    _node_or_skip()
    _install_wallet_dependencies()
    data_dir = tmp_path_factory.mktemp("node-mesh") / "data"
    ports = {name: free_port() for name in ("gateway", "identity", "account", "payment", "settlement", "bankweb")}
    batching = "true" if request.param == "batched" else "false"
    running = LocalMesh(data_dir, ports=ports, quiet=True, child_env={"payment": {"OBM_PAYMENT_BATCHING": batching}})
    await running.start()
    operator = Operator(data_dir, ports=ports)
    try:
        demo = await seed_demo_data(operator, say=lambda _: None)
    finally:
        await operator.close()
    yield running, demo
    await running.stop(grace=10)


def _wallet_environment(mesh: LocalMesh, demo: dict[str, Any], **overrides: str) -> dict[str, str]:
    """The demo credentials as the wallet's environment (secrets stay out of argv)."""
    partner = demo["partners"]["acme"]
    alice = demo["customers"]["alice"]
    env = dict(
        os.environ,
        OBM_GATEWAY=f"127.0.0.1:{mesh.ports['gateway']}",
        OBM_IDENTITY=f"127.0.0.1:{mesh.ports['identity']}",
        OBM_CLIENT_ID=partner["client_id"],
        OBM_CLIENT_SECRET=partner["client_secret"],
        OBM_BANK_APP_SECRET=mesh.credentials["bank-app"],
        OBM_CUSTOMER_USERNAME=alice["username"],
        OBM_CUSTOMER_PASSWORD=alice["password"],
        OBM_CUSTOMER_TOTP_SECRET=alice["totp_secret"],
        OBM_ACCOUNT=alice["account"],
        OBM_AMOUNT_MINOR_UNITS=str(TOP_UP_MINOR_UNITS),
    )
    env.update(overrides)
    return env


def _run_wallet(env: dict[str, str]) -> tuple[int, dict[str, dict[str, Any]], list[str]]:
    """Run wallet.mjs; its exit code, its steps by name, and the step names in order."""
    finished = subprocess.run(
        [_node_or_skip(), "wallet.mjs"], cwd=WALLET_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    lines = [json.loads(line) for line in finished.stdout.splitlines() if line.strip()]
    assert lines, f"no output; stderr: {finished.stderr[-2000:]}"
    return finished.returncode, {line["step"]: line for line in lines}, [line["step"] for line in lines]


async def test_the_node_client_drives_the_whole_core_flow_through_the_gateway(mesh_and_demo) -> None:  # type: ignore[no-untyped-def]
    mesh, demo = mesh_and_demo
    code, steps, order = _run_wallet(_wallet_environment(mesh, demo))
    assert order == CORE_STEPS, steps
    assert code == 0 and all(step["ok"] for step in steps.values()), steps
    acme, alice = demo["partners"]["acme"], demo["customers"]["alice"]

    token = steps["issue_token"]["result"]
    assert token["token_type"] == "Bearer" and token["expires_in"] > 0
    assert "access_token" not in token  # the client never prints secrets

    consent = steps["create_consent"]["result"]
    assert consent["state"] == "CONSENT_STATE_AWAITING_AUTHORISATION"
    assert consent["partner"] == acme["partner"]
    assert consent["name"].startswith("consents/")
    assert int(consent["ratelimit"]["ratelimit-limit"]) > 0  # the gateway's rate-limit headers

    authorised = steps["authorise_consent"]["result"]
    assert authorised["state"] == "CONSENT_STATE_AUTHORISED"
    assert authorised["accounts"] == [alice["account"]]
    assert authorised["customer"] == alice["customer"]

    exchanged = steps["exchange_code"]["result"]
    assert exchanged["consent"] == consent["name"] and exchanged["has_refresh_token"]
    assert {"accounts:read", "funds:confirm", "payments:write"} <= set(exchanged["scopes"])

    accounts = steps["list_accounts"]["result"]["accounts"]
    assert [a["name"] for a in accounts] == [alice["account"]]
    assert accounts[0]["currency_code"] == "EUR"
    assert "•" in accounts[0]["display_number"]  # masked, never the full number

    balance = steps["get_balance"]["result"]
    assert balance["account"] == alice["account"]
    assert balance["current"]["currency_code"] == "EUR" and int(balance["current"]["minor_units"]) > 0

    assert steps["confirm_funds"]["result"]["funds_available"] is True

    created = steps["create_payment"]["result"]
    assert created["name"].startswith("payments/") and created["creditor_wallet"] == acme["partner"]
    assert created["amount"] == {"currency_code": "EUR", "minor_units": str(TOP_UP_MINOR_UNITS)}
    final = steps["get_payment"]["result"]
    assert final["name"] == created["name"]
    assert final["state"] == "PAYMENT_STATE_SETTLED" and final["iso20022_status"] == "ACSC"


async def test_the_node_client_decodes_the_error_reason_from_the_status_trailer(mesh_and_demo) -> None:  # type: ignore[no-untyped-def]
    mesh, demo = mesh_and_demo
    code, steps, order = _run_wallet(_wallet_environment(mesh, demo, OBM_CLIENT_SECRET="not-the-secret"))
    assert code == 1 and order == ["issue_token", "done"]
    error = steps["issue_token"]["error"]
    assert error["code_name"] == "UNAUTHENTICATED"
    assert error["reason"] == "INVALID_CLIENT" and error["domain"].endswith("openbank.dev")
    assert any(detail["@type"] == "google.rpc.ErrorInfo" for detail in error["details"])


REDIRECT_STEPS = ["issue_token", "create_consent", "push_authorization_request", "authorise_at_bank", *CORE_STEPS[3:]]


async def test_the_node_client_does_the_redirect_flow_with_a_scripted_customer(mesh_and_demo) -> None:  # type: ignore[no-untyped-def]
    mesh, demo = mesh_and_demo
    bob = demo["customers"]["bob"]
    env = _wallet_environment(
        mesh,
        demo,
        OBM_BANK_WEB=f"http://127.0.0.1:{mesh.ports['bankweb']}",
        OBM_REDIRECT_URI=demo["partners"]["acme"]["redirect_uris"][0],
        OBM_CUSTOMER_USERNAME=bob["username"],
        OBM_CUSTOMER_TOTP_SECRET=bob["totp_secret"],
    )
    for internal in ("OBM_BANK_APP_SECRET", "OBM_ACCOUNT", "OBM_IDENTITY"):  # public endpoints only
        env.pop(internal)
    code, steps, order = _run_wallet(env)
    assert order == REDIRECT_STEPS, steps
    assert code == 0 and all(step["ok"] for step in steps.values()), steps
    assert "request_uri" not in steps["push_authorization_request"]["result"]
    back = steps["authorise_at_bank"]["result"]
    assert back["account"] == bob["account"] and back["iss"] and "authorization_code" not in back
    assert [a["name"] for a in steps["list_accounts"]["result"]["accounts"]] == [bob["account"]]
    assert steps["get_payment"]["result"]["state"] == "PAYMENT_STATE_SETTLED"


EVENT_STEPS = [*CORE_STEPS[:-1], "events_token", "stream_events", "resume_events", "done"]


async def test_the_node_client_reads_its_event_log_and_resumes_it_from_a_cursor(mesh_and_demo) -> None:  # type: ignore[no-untyped-def]
    mesh, demo = mesh_and_demo
    code, steps, order = _run_wallet(_wallet_environment(mesh, demo, OBM_EVENTS="true"))
    assert order == EVENT_STEPS, steps
    assert code == 0 and all(step["ok"] for step in steps.values()), steps
    assert "access_token" not in steps["events_token"]["result"]
    consent = steps["create_consent"]["result"]["name"]
    streamed = steps["stream_events"]["result"]["payment_events"]
    states = [e["state"] for e in streamed]
    # The payment's changes, each once, in order, under its consent.
    assert states[0] == "PAYMENT_STATE_RECEIVED" and states[-1] == "PAYMENT_STATE_SETTLED", states
    assert len(set(states)) == len(states)
    assert all(e["consent"] == consent and e["type"] == "EVENT_TYPE_PAYMENT_STATE_CHANGED" for e in streamed)
    assert [int(e["cursor"]) for e in streamed] == sorted(int(e["cursor"]) for e in streamed)
    # Resumed after the first event's cursor: the rest, the same events, nothing before it.
    resumed = steps["resume_events"]["result"]
    assert resumed["after_cursor"] == streamed[0]["cursor"]
    assert [e["event_id"] for e in resumed["payment_events"]] == [e["event_id"] for e in streamed[1:]]
