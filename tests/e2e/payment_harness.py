"""Real processes for the payment e2e tests.

- ``running_mesh``: the local mesh as ``make up`` runs it (a module's processes on free ports),
  seeded with the demo data, with the operator and a wallet's consent-bound access over
  alice's account through the gateway; its ``restart`` returns once the gateway forwards to
  the restarted service again (used by the external payment, risk, dispute and onboarding
  modules).
- ``ServiceProcess``: for the payment crash tests, account, settlement and payment as
  ``python -m services.<name>`` subprocesses (SQLite files in a temporary directory), identity
  in-process (real tokens and consents, through identity's own test harness). Each service gets
  internal client credentials (``OBM_SERVICE_CLIENT_ID``/``SECRET``) that the in-process
  identity knows; the operator client ``ops`` holds every admin scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshcli.demo import _authorise, client_credentials_token, create_payment_consent, exchange_code
from meshcli.mesh import LocalMesh, MeshProcess
from meshcli.operator import Operator
from meshcli.seed import seed_demo_data
from meshlib.grpc_errors import decode_rpc_error
from openbank.account.v1 import account_pb2, account_pb2_grpc
from openbank.identity.v1 import consent_pb2_grpc, token_pb2, token_pb2_grpc
from openbank.payment.v1 import payment_pb2, payment_pb2_grpc
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
                # A test mesh: payment's local step-up secret (refused anywhere else).
                "OBM_ALLOW_DEV_SECRETS": "true",
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


# What the gateway answers itself while it cannot reach an upstream (nothing was forwarded).
NOT_FORWARDED = frozenset({"UPSTREAM_UNAVAILABLE", "UPSTREAM_TIMEOUT"})


class PaymentMesh(LocalMesh):
    """The local mesh whose ``restart`` also waits until the gateway forwards to the service.

    After a restart the gateway may still hold the service as not answering for a while (its
    channel reconnects on its own backoff, up to a second and longer on a busy machine, or the
    replica is ejected until its next health probe) and meanwhile answers UPSTREAM_UNAVAILABLE
    without reaching it, which a wallet retries after the delay given. A test that restarts a
    service waits here, as a wallet retrying, until a read of that service is forwarded.
    """

    access: tuple[tuple[str, str], ...] = ()  # a consent-bound token over ``account``
    account = ""

    async def restart(self, child: MeshProcess, timeout: float | None = None) -> None:
        await super().restart(child, timeout)
        await self.forwarded_again(child)

    async def forwarded_again(self, child: MeshProcess, timeout: float = 30.0) -> None:
        """Until a read through the gateway reaches ``child``'s service (any answer the service
        gives ends the wait); returns at once if the process exits meanwhile (a failpoint)."""
        probe = self._probe(child.name)
        if probe is None:
            return
        deadline = time.monotonic() + timeout
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.ports['gateway']}") as channel:
            while child.process is not None and child.process.returncode is None:
                try:
                    await probe(channel)
                    return
                except grpc.aio.AioRpcError as error:
                    if decode_rpc_error(error).reason not in NOT_FORWARDED:
                        return  # the service itself answered
                    if time.monotonic() > deadline:
                        raise
                await asyncio.sleep(0.2)

    def _probe(self, service: str) -> Any:
        """A read the gateway forwards to ``service`` (None: none goes through the gateway)."""
        if "gateway" not in self.ports:
            return None
        if service == "identity":
            return lambda channel: token_pb2_grpc.TokenServiceStub(channel).GetJwks(
                token_pb2.GetJwksRequest(), timeout=5
            )
        if service == "account" and self.access:
            return lambda channel: account_pb2_grpc.AccountServiceStub(channel).GetBalance(
                account_pb2.GetBalanceRequest(account=self.account), metadata=self.access, timeout=5
            )
        if service == "payment" and self.access:
            return lambda channel: payment_pb2_grpc.PaymentServiceStub(channel).GetPayment(
                payment_pb2.GetPaymentRequest(name=f"payments/{uuid.uuid4()}"), metadata=self.access, timeout=5
            )
        return None


@dataclass
class RunningMesh:
    """The mesh, its operator, the seeded demo data, and a wallet's way in through the gateway."""

    mesh: PaymentMesh
    operator: Operator
    demo: dict[str, Any]
    gateway: grpc.aio.Channel
    access: tuple[tuple[str, str], ...]  # acme's consent-bound token over alice's account


async def wallet_access(
    gateway: grpc.aio.Channel, operator: Operator, demo: dict[str, Any], partner: str = "acme", customer: str = "alice"
) -> tuple[tuple[str, str], ...]:
    """The partner's consent-bound access to the customer's account, as a wallet gets it:
    a client token, a payment consent (100,000 minor units per payment, 1000 reads a day),
    the customer authorising it in the bank's app, the code exchanged. The customer is
    present (FAPI header): a test's many reads use no unattended allowance."""
    tokens = token_pb2_grpc.TokenServiceStub(gateway)
    client = await client_credentials_token(tokens, demo["partners"][partner])
    consent, verifier = await create_payment_consent(
        consent_pb2_grpc.ConsentServiceStub(gateway),
        client.access_token,
        per_payment_minor=100_000,
        reads_per_day=1000,
        valid_for=dt.timedelta(days=1),
    )
    authorised = await _authorise(operator, consent.name, demo["customers"][customer])
    bound = await exchange_code(tokens, demo["partners"][partner], authorised.authorization_code, verifier)
    return (("authorization", f"Bearer {bound.access_token}"), ("x-fapi-customer-ip-address", "198.51.100.7"))


@contextlib.asynccontextmanager
async def running_mesh(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    processes: Iterable[str],
    extra_env: dict[str, str] | None = None,
    ready_timeout: float = 180.0,
) -> AsyncIterator[RunningMesh]:
    """Start ``processes`` on free ports (data under a fresh ``<name>`` directory), seed the
    demo data, connect acme's wallet over alice's account; stop everything afterwards."""
    data_dir = tmp_path_factory.mktemp(name) / "data"
    ports = {process: free_port() for process in processes}
    mesh = PaymentMesh(data_dir, ports=ports, quiet=True, extra_env=extra_env, ready_timeout=ready_timeout)
    try:
        await mesh.start()
    except BaseException:
        await mesh.stop(grace=5)
        raise
    operator = Operator(data_dir, ports=ports)
    gateway = grpc.aio.insecure_channel(f"127.0.0.1:{ports['gateway']}")
    try:
        demo = await seed_demo_data(operator, say=lambda *_: None)
        access = await wallet_access(gateway, operator, demo)
        mesh.access, mesh.account = access, demo["customers"]["alice"]["account"]
        yield RunningMesh(mesh, operator, demo, gateway, access)
    finally:
        await gateway.close()
        await operator.close()
        await mesh.stop(grace=10)
