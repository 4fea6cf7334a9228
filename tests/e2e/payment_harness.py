"""Real processes for the payment crash tests: account, settlement and payment as
``python -m services.<name>`` subprocesses (SQLite files in a temporary directory), identity
in-process (real tokens and consents, through identity's own test harness).

Each service gets internal client credentials (``OBM_SERVICE_CLIENT_ID``/``SECRET``) that the
in-process identity knows; the operator client ``ops`` holds every admin scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.payment.bootstrap import SERVICE_SCOPES
from services.settlement.bootstrap import SERVICE_SCOPES as SETTLEMENT_SCOPES
from tests.integration.identity.harness import SECRETS, with_clients
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
OPS_SCOPES = [
    "ledger:admin",
    "ledger:read",
    "ledger:write",
    "settlement:admin",
    "settlement:read",
    "settlement:write",
    "payments:admin",
]
SERVICE_CLIENTS = {
    "account": ["consents:read", "tokens:introspect"],
    "settlement": SETTLEMENT_SCOPES,
    "payment": SERVICE_SCOPES,
    "ops": OPS_SCOPES,
}


def internal_clients() -> list[dict[str, Any]]:
    """Identity's test clients plus one per service and the operator."""
    extra = [
        {"client_id": name, "secret": f"{name}-secret-0123456789", "scopes": scopes}
        for name, scopes in SERVICE_CLIENTS.items()
    ]
    return with_clients(*extra)


def client_secret(name: str) -> str:
    """The secret of a service client (or of identity's own test clients)."""
    return SECRETS.get(name, f"{name}-secret-0123456789")


@dataclass
class ServiceProcess:
    """One service subprocess: start, SIGKILL, restart with other settings, wait for exit."""

    name: str
    data_dir: Path
    identity_target: str
    targets: dict[str, str]
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def target(self) -> str:
        """host:port of the service."""
        return f"127.0.0.1:{self.port}"

    def environment(self, overrides: dict[str, str]) -> dict[str, str]:
        """The process's OBM_* environment."""
        env = dict(os.environ)
        env.update(
            {
                "OBM_PORT": str(self.port),
                "OBM_HOST": "127.0.0.1",
                "OBM_SERVICE_NAME": self.name,
                "OBM_DATABASE_URL": f"sqlite+aiosqlite:///{self.data_dir / f'{self.name}.db'}",
                "OBM_IDENTITY_TARGET": self.identity_target,
                "OBM_SERVICE_CLIENT_ID": self.name,
                "OBM_SERVICE_CLIENT_SECRET": client_secret(self.name),
                "OBM_LOG_LEVEL": "WARNING",
                "OBM_LOG_FORMAT": "json",
            }
        )
        for peer, target in self.targets.items():
            env[f"OBM_{peer.upper()}_TARGET"] = target
        env.update(self.extra_env)
        env.update(overrides)
        return env

    def spawn(self, **overrides: str) -> subprocess.Popen[bytes]:
        """Launch the process (output to ``<name>-<n>.log`` in the data directory)."""
        self.starts += 1
        with open(self.data_dir / f"{self.name}-{self.starts}.log", "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", f"services.{self.name}"],
                cwd=REPO,
                env=self.environment(overrides),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.process

    async def start(self, **overrides: str) -> None:
        """Start the process and wait until it serves (a failure quotes the end of its log)."""
        try:
            await wait_serving(self.target, self.spawn(**overrides))
        except (RuntimeError, TimeoutError) as error:
            log = self.data_dir / f"{self.name}-{self.starts}.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
            raise RuntimeError(f"{error}\n--- {log.name} ---\n{tail}") from None

    def kill(self) -> None:
        """SIGKILL (no clean-up at all)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    async def wait_exit(self, timeout: float = 15.0) -> int:
        """The exit code, once the process ended by itself (e.g. at a failpoint)."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not exit")
            await asyncio.sleep(0.05)
        return self.process.returncode

    def stop(self) -> None:
        """SIGTERM and wait (end of test)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


async def wait_serving(target: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Poll the health service until SERVING (fails early when the process died)."""
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{target}: the process exited with {process.returncode}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{target} is not serving after {timeout}s")


def internal_clients_json() -> str:
    """OBM_INTERNAL_CLIENTS for identity."""
    return json.dumps(internal_clients())
