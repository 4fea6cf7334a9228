"""`openbank-mesh up` itself (what `make up` runs), as a user runs it: it starts the
processes, prints its banner, `buf curl --list-methods` works against the gateway through
reflection, and Ctrl-C stops everything within seconds with exit code 0. The CLI finds a mesh
started on other ports, onboards a partner with one command, and a port already taken stops
`up` at once with the cause (issue 26).

`up --base-port` writes where each process listens into the data directory; `demo` and the
operator commands read it (no --base-port, no OBM_*_TARGET variables needed). One `up` serves
all of it (starting one takes most of the time)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import openbank_sdk as ob
import pytest
from openbank_sdk.sandbox import SandboxBankApp

from meshcli.seed import load_demo_credentials
from openbank.payment.v1 import payment_pb2
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
ENV = {k: v for k, v in os.environ.items() if not (k.startswith("OBM_") and k.endswith("_TARGET"))}
BUF = ROOT / "node_modules" / ".bin" / "buf"


def _free_block() -> int:
    """A base port whose next six ports are free too (the services, the bank's web pages and the
    operator console)."""
    for _ in range(50):
        base = free_port()
        if base + 6 < 65535 and all(_is_free(base + i) for i in range(7)):
            return base
    raise RuntimeError("no block of seven free ports")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _buf_lists_the_partner_methods(base: int) -> None:
    if not BUF.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("buf is not installed (npm install)")
        return
    listed = subprocess.run(
        [
            str(BUF),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--list-methods",
            f"http://127.0.0.1:{base}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    assert "openbank.payment.v1.PaymentService/CreatePayment" in listed.stdout
    # What a partner can call, as the README says: internal rpcs are not listed.
    assert "openbank.identity.v1.ConsentService/CreateConsent" in listed.stdout
    assert "AuthoriseConsent" not in listed.stdout and "IntrospectToken" not in listed.stdout


def _up(data_dir: Path, base: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "meshcli.main", "up", "--data-dir", str(data_dir), "--base-port", str(base)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=dict(ENV, OBM_LOG_LEVEL="WARNING"),
            start_new_session=True,  # a failed test can stop up and every process it started
        )


def _stop_everything(process: subprocess.Popen[bytes]) -> None:
    """After a failure: Ctrl-C to up (it stops its processes), then kill what is left."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def _cli(data_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshcli.main", *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=ENV,
        timeout=timeout,
        check=False,
    )


def _the_example_wallets_find_the_mesh(data_dir: Path) -> None:
    """Both example wallets reach this mesh on its other ports through mesh.json alone (no
    gateway or identity address given)."""
    python_wallet = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "python-wallet" / "wallet.py"),
            "--demo",
            "--demo-data-dir",
            str(data_dir),
            "--demo-customer",
            "bob",  # alice's one-time codes of this half-minute went to the demo
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert python_wallet.returncode == 0, python_wallet.stdout[-3000:] + python_wallet.stderr[-3000:]
    assert "PAYMENT_STATE_SETTLED" in python_wallet.stdout
    demo = load_demo_credentials(data_dir)
    assert demo is not None
    acme, bob = demo["partners"]["acme"], demo["customers"]["bob"]
    secrets = json.loads((data_dir / "internal-clients.json").read_text())
    node_env = {k: v for k, v in ENV.items() if k not in ("OBM_GATEWAY", "OBM_IDENTITY")}
    node_env.update(
        OBM_MESH_FILE=str(data_dir / "mesh.json"),
        OBM_CLIENT_ID=acme["client_id"],
        OBM_CLIENT_SECRET=acme["client_secret"],
        OBM_BANK_APP_SECRET=secrets["bank-app"],
        OBM_CUSTOMER_USERNAME=bob["username"],
        OBM_CUSTOMER_PASSWORD=bob["password"],
        OBM_CUSTOMER_TOTP_SECRET=bob["totp_secret"],
        OBM_ACCOUNT=bob["account"],
    )
    node = subprocess.run(
        ["node", "wallet.mjs"],
        cwd=ROOT / "examples" / "node-wallet",
        env=node_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    steps = [json.loads(line) for line in node.stdout.splitlines() if line.strip()]
    assert node.returncode == 0 and steps and steps[-1]["step"] == "done", node.stdout[-3000:] + node.stderr[-3000:]


def _wait_banner(process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while "stop: Ctrl-C" not in log.read_text():
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.2)


async def test_up_serves_the_cli_demo_and_operator_commands_on_other_ports_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    base, data_dir, log = _free_block(), tmp_path / "data", tmp_path / "up.log"
    process = _up(data_dir, base, log)
    try:
        _wait_banner(process, log)
        banner = log.read_text()
        assert f"gateway     127.0.0.1:{base}" in banner and "client_id" in banner
        _buf_lists_the_partner_methods(base)
        recorded = json.loads((data_dir / "mesh.json").read_text())["ports"]
        assert recorded["gateway"] == base and recorded["identity"] == base + 1
        listed = _cli(data_dir, "partner", "list")
        assert listed.returncode == 0 and "Acme" in listed.stdout, listed.stderr
        assert listed.stdout.split()[:3] == ["PARTNER", "NAME", "STATUS"]  # a table with headers
        as_json = [json.loads(line) for line in _cli(data_dir, "partner", "list", "--json").stdout.splitlines()]
        assert any("Acme" in p["display_name"] and p["name"].startswith("partners/") for p in as_json)
        totals = _cli(data_dir, "account", "totals")
        assert totals.returncode == 0 and "EUR" in totals.stdout and "NET" in totals.stdout, totals.stdout
        onboarded = _cli(data_dir, "partner", "onboard", "Onboarded Wallet", "--net-debit-cap", "500")
        assert onboarded.returncode == 0, onboarded.stderr
        lines = dict(line.split(None, 1) for line in onboarded.stdout.splitlines()[1:] if line.startswith("  "))
        partner = onboarded.stdout.split()[1]
        assert lines["participant"].startswith("participants/") and lines["settlement"].startswith("accounts/")
        # A top-up to the new partner settles (it used to be refused BENEFICIARY_INVALID).
        demo = load_demo_credentials(data_dir)
        assert demo is not None
        alice = demo["customers"]["alice"]
        secrets = json.loads((data_dir / "internal-clients.json").read_text())
        bank_app = SandboxBankApp(ob.insecure_channel(f"127.0.0.1:{base + 1}"), "bank-app", secrets["bank-app"])
        async with ob.OpenBankClient(
            ob.insecure_channel(f"127.0.0.1:{base}"), lines["client_id"].strip(), lines["client_secret"].strip()
        ) as wallet:
            pending = await wallet.create_consent(
                [ob.READ_ACCOUNTS, ob.INITIATE_PAYMENTS], per_payment_limit=ob.money(10_000, "EUR")
            )
            code = await bank_app.authorise(
                pending.name,
                username=alice["username"],
                password=alice["password"],
                totp_secret=alice["totp_secret"],
                accounts=[alice["account"]],
            )
            session = await wallet.exchange_code(code.authorization_code, pending.pkce.verifier)
            paid = await session.create_payment(alice["account"], ob.money(1_000, "EUR"), creditor_wallet=partner)
            assert paid.state == payment_pb2.PAYMENT_STATE_SETTLED, paid
        # Each participant by name against its cap; the new wallet is owed what was paid to it.
        positions = _cli(data_dir, "participant", "list")
        assert positions.returncode == 0, positions.stderr
        row = next(line for line in positions.stdout.splitlines() if "Onboarded Wallet" in line)
        assert "EUR 10.00" in row and "EUR 500.00" in row, row
        rows = [json.loads(line) for line in _cli(data_dir, "participant", "list", "--json").stdout.splitlines()]
        assert any(r["name"] == "the bank" for r in rows)
        mine = next(r for r in rows if r["name"] == "Onboarded Wallet")
        assert (mine["net"], mine["cap"]) == (1_000, 50_000)
        # Running onboard again with the same key finishes, creating nothing twice.
        again = _cli(data_dir, "partner", "onboard", "Twice", "--request-id", "onboard-1")
        twice = _cli(data_dir, "partner", "onboard", "Twice", "--request-id", "onboard-1")
        assert again.returncode == twice.returncode == 0
        assert again.stdout.split()[1] == twice.stdout.split()[1]
        assert "shown only on the first registration" in twice.stdout
        journey = _cli(data_dir, "demo", timeout=240)
        assert journey.returncode == 0, journey.stdout[-3000:] + journey.stderr[-3000:]
        _the_example_wallets_find_the_mesh(data_dir)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert time.monotonic() - started < 15
        assert not (data_dir / "mesh.json").exists()  # nothing listens there any more
    finally:
        _stop_everything(process)
    assert "stopped" in log.read_text().splitlines()[-1]


def test_a_command_against_no_mesh_says_so_without_a_traceback(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "internal-clients.json").write_text(json.dumps({"operator": "x", "bank-app": "y"}))
    answer = _cli(data_dir, "partner", "list", "--base-port", str(_free_block()), timeout=60)
    assert answer.returncode == 1 and "is the mesh running?" in answer.stderr
    assert "Traceback" not in answer.stderr


def test_up_with_a_port_taken_fails_at_once_naming_it(tmp_path: Path) -> None:
    base = _free_block()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", base + 2))  # account's port
        squatter.listen()
        log = tmp_path / "up.log"
        started = time.monotonic()
        process = _up(tmp_path / "data", base, log)
        try:
            assert process.wait(timeout=30) == 1
        finally:
            _stop_everything(process)
    assert time.monotonic() - started < 20
    assert f"port already in use: account :{base + 2}" in log.read_text(), log.read_text()
