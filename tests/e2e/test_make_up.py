"""`openbank-mesh up` itself (what `make up` runs), as a user runs it: it starts five
processes, prints its banner, `buf curl --list-methods` works against the gateway through
reflection, and Ctrl-C stops everything within seconds with exit code 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.servers import free_port

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
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
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_up_serves_lists_methods_over_reflection_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    base = _free_block()
    log = tmp_path / "up.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "meshcli.main",
                "up",
                "--data-dir",
                str(tmp_path / "data"),
                "--base-port",
                str(base),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=dict(os.environ, OBM_LOG_LEVEL="WARNING"),
        )
        try:
            deadline = time.monotonic() + 120
            while "stop: Ctrl-C" not in log.read_text():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            banner = log.read_text()
            assert f"gateway     127.0.0.1:{base}" in banner and "client_id" in banner
            if BUF.exists():
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
            elif os.environ.get("CI", "").lower() == "true":
                pytest.fail("buf is not installed (npm install)")
            started = time.monotonic()
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0, log.read_text()
            assert time.monotonic() - started < 15
        finally:
            if process.poll() is None:
                process.kill()
    assert "stopped" in log.read_text().splitlines()[-1]
