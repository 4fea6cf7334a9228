"""Two replicas of every service and the gateway on a private PostgreSQL and Redis, and a
partner driving payments and reads through both gateways with the SDK's retries.

Every attempt the partner's channel sees is recorded (its status code and reason), so a test
can say which calls failed, how, and that the SDK retried each one to success.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from openbank_sdk.client import Invoker
from openbank_sdk.errors import OpenBankError
from openbank_sdk.retry import RetryPolicy

from meshcli.demo import _authorise, client_credentials_token, create_payment_consent, exchange_code
from meshcli.mesh import PROCESSES, LocalMesh
from meshcli.operator import Operator
from meshcli.seed import seed_demo_data
from meshlib.grpc_errors import decode_rpc_error
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, account_pb2, account_pb2_grpc
from openbank.common.v1 import money_pb2
from openbank.identity.v1 import consent_pb2_grpc, token_pb2_grpc
from openbank.payment.v1 import payment_admin_pb2, payment_admin_pb2_grpc, payment_pb2, payment_pb2_grpc
from openbank.settlement.v1 import (
    settlement_admin_pb2,
    settlement_admin_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
)
from tests.support.servers import PrivatePostgres, free_port

# Patient enough to ride out PostgreSQL stopped for 6 s or a replica restarting.
PATIENT = RetryPolicy(max_attempts=40, initial_backoff=0.1, max_backoff=0.5)
FINAL = {payment_pb2.PAYMENT_STATE_SETTLED, payment_pb2.PAYMENT_STATE_REJECTED}
TOP_UP_MINOR = 1


@dataclass
class Attempt:
    """One attempt the partner's channel saw fail."""

    at: float
    method: str
    code: grpc.StatusCode
    reason: str


@dataclass
class AttemptLog(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Client interceptor: records every failed attempt and counts every attempt."""

    failed: list[Attempt] = field(default_factory=list)
    attempts: int = 0

    async def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        self.attempts += 1
        call = await continuation(client_call_details, request)
        try:
            await call
        except grpc.aio.AioRpcError as error:
            method = client_call_details.method
            method = method.decode() if isinstance(method, bytes) else method
            self.failed.append(
                Attempt(time.monotonic(), method.rsplit("/", 1)[-1], error.code(), decode_rpc_error(error).reason)
            )
        return call

    def between(self, start: float, end: float) -> list[Attempt]:
        """The failed attempts in a time span."""
        return [a for a in self.failed if start <= a.at <= end]


class _Bearer:
    """A consent-bound access token as the SDK's Invoker wants a token source."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._token}"),)

    async def refresh(self) -> None:  # the test is shorter than a token's life
        return None


@dataclass
class Load:
    """What the partner's load did: calls answered, calls that failed after every retry."""

    payments: list[str] = field(default_factory=list)
    reads: int = 0
    gave_up: list[str] = field(default_factory=list)


@dataclass
class ReplicatedMesh:
    """The running mesh, its stores, and a partner with an authorised consent over alice's account."""

    mesh: LocalMesh
    postgres: PrivatePostgres
    operator: Operator
    partner_channel: grpc.aio.Channel
    attempts: AttemptLog
    invoker: Invoker
    token: _Bearer
    customer_account: str
    wallet: str
    wallet_participant: str
    load: Load = field(default_factory=Load)

    async def top_up(self) -> None:
        """One payment through the gateways, retried by the SDK until it answers."""
        stub = payment_pb2_grpc.PaymentServiceStub(self.partner_channel)
        request = payment_pb2.CreatePaymentRequest(
            request_id=uuid.uuid4().hex,
            debtor_account=self.customer_account,
            creditor_wallet=self.wallet,
            amount=money_pb2.Money(currency_code="EUR", minor_units=TOP_UP_MINOR),
            type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
        )
        try:
            created = await self.invoker.unary(stub.CreatePayment, request, self.token, mutating=True)
        except OpenBankError as error:
            self.load.gave_up.append(f"CreatePayment {error.code.name} {error.reason}")
            return
        self.load.payments.append(created.payment.name)

    async def read(self) -> None:
        """One balance read through the gateways, retried by the SDK until it answers."""
        stub = account_pb2_grpc.AccountServiceStub(self.partner_channel)
        try:
            await self.invoker.unary(
                stub.GetBalance, account_pb2.GetBalanceRequest(account=self.customer_account), self.token
            )
        except OpenBankError as error:
            self.load.gave_up.append(f"GetBalance {error.code.name} {error.reason}")
            return
        self.load.reads += 1

    @contextlib.asynccontextmanager
    async def driving(self, payers: int = 2, readers: int = 2) -> AsyncIterator[None]:
        """Payments and reads in the background for the duration of the block."""
        stop = asyncio.Event()

        async def loop(work: Any) -> None:
            while not stop.is_set():
                await work()
                await asyncio.sleep(0.02)

        tasks = [asyncio.create_task(loop(self.top_up)) for _ in range(payers)]
        tasks += [asyncio.create_task(loop(self.read)) for _ in range(readers)]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks)

    async def all_payments(self) -> dict[str, Any]:
        """Every payment the mesh holds, by name (the operators' search)."""
        stub = payment_admin_pb2_grpc.PaymentAdminServiceStub(self.operator.channel("payment"))
        found: dict[str, Any] = {}
        token = ""
        while True:
            page = await stub.SearchPayments(
                payment_admin_pb2.SearchPaymentsRequest(page_size=500, page_token=token),
                metadata=await self.operator.metadata(),
                timeout=10,
            )
            found.update({p.name: p for p in page.payments})
            token = page.next_page_token
            if not token:
                return found

    async def snapshot(self) -> Snapshot:
        """Where money and payments stand before a test's load (starts a fresh load record)."""
        self.load = Load()
        self.attempts.failed.clear()
        net, reserved = await self.position()
        assert reserved == 0
        return Snapshot(set(await self.all_payments()), await self.available(), net)

    async def available(self) -> int:
        """Alice's available balance, as the partner reads it."""
        answer = await self.invoker.unary(
            account_pb2_grpc.AccountServiceStub(self.partner_channel).GetBalance,
            account_pb2.GetBalanceRequest(account=self.customer_account),
            self.token,
        )
        return int(answer.balance.available.minor_units)

    async def position(self) -> tuple[int, int]:
        """(net, reserved) of the wallet's participant in EUR."""
        answer = await settlement_pb2_grpc.SettlementServiceStub(self.operator.channel("settlement")).GetPosition(
            settlement_pb2.GetPositionRequest(participant=self.wallet_participant, currency_code="EUR"),
            metadata=await self.operator.metadata(),
            timeout=10,
        )
        return answer.position.net_position.minor_units, answer.position.reserved.minor_units

    async def check_money(self, before: Snapshot, timeout: float = 90.0) -> dict[str, int]:
        """Every payment of the load ends SETTLED or REJECTED, each request made one payment,
        the ledger nets to zero with no hold, the customer paid and the wallet's position grew
        by exactly the settled ones, and the closed window reconciles clean. Returns the count
        of each final state."""
        deadline = time.monotonic() + timeout
        while True:
            found = await self.all_payments()
            new = {name: p for name, p in found.items() if name not in before.payments}
            pending = [p.name for p in new.values() if p.state not in FINAL]
            if not pending:
                break
            assert time.monotonic() < deadline, f"{len(pending)} payments never ended, e.g. {pending[:3]}"
            await asyncio.sleep(0.5)
        # None twice: each CreatePayment (one request_id, however often retried) made one payment.
        assert len(self.load.payments) == len(set(self.load.payments))
        assert set(new) == set(self.load.payments)
        settled = sum(1 for p in new.values() if p.state == payment_pb2.PAYMENT_STATE_SETTLED)
        admin = await self.operator.metadata()
        totals = await account_admin_pb2_grpc.AccountAdminServiceStub(self.operator.channel("account")).GetLedgerTotals(
            account_admin_pb2.GetLedgerTotalsRequest(), metadata=admin, timeout=10
        )
        (eur,) = [t for t in totals.totals if t.currency_code == "EUR"]
        assert eur.balanced and eur.net.minor_units == 0
        assert eur.pending_debits.minor_units == eur.pending_credits.minor_units == 0
        assert await self.available() == before.available - settled * TOP_UP_MINOR
        assert await self.position() == (before.net + settled * TOP_UP_MINOR, 0)
        windows = settlement_admin_pb2_grpc.SettlementAdminServiceStub(self.operator.channel("settlement"))
        closed = await windows.CloseSettlementWindow(
            settlement_admin_pb2.CloseSettlementWindowRequest(request_id=uuid.uuid4().hex, currency_code="EUR"),
            metadata=admin,
            timeout=30,
        )
        report = await windows.ReconcileSettlementWindow(
            settlement_admin_pb2.ReconcileSettlementWindowRequest(name=closed.closed_window.name),
            metadata=admin,
            timeout=60,
        )
        assert report.report.clean, list(report.report.differences)[:5]
        return dict(
            Counter(
                payment_pb2.PaymentState.Name(p.state).removeprefix("PAYMENT_STATE_")
                + (f" {p.status_reason}" if p.state == payment_pb2.PAYMENT_STATE_REJECTED else "")
                for p in new.values()
            )
        )


@dataclass
class Snapshot:
    """Payments, the customer's available balance and the wallet's net position before a load."""

    payments: set[str]
    available: int
    net: int


def replicated_env(postgres: PrivatePostgres, redis_url: str, prefix: str, data_dir: Path) -> dict[str, str]:
    """The mesh's settings: its stores, short clocks so recovery happens within the test, and
    no velocity rules (the load pays far more often than a customer would)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    no_rules = data_dir / "no-velocity-rules.yaml"
    no_rules.write_text("rules: []\n")
    return {
        "OBM_VELOCITY_RULES_FILE": str(no_rules),
        "DATABASE_URL": postgres.url_for(f"rep{free_port()}"),
        "REDIS_URL": redis_url,
        "OBM_INVALIDATION_CHANNEL": f"{prefix}inv",
        "OBM_RATELIMIT_KEY_PREFIX": f"{prefix}rl:",
        "OBM_LOG_LEVEL": "INFO" if os.environ.get("OBM_TEST_MESH_OUTPUT") == "1" else "WARNING",
        "OBM_SAGA_LEASE_SECONDS": "3",
        "OBM_RECOVERY_INTERVAL_SECONDS": "1",
        "OBM_UPSTREAM_DEADLINES": json.dumps({"reads": 2.0, "payments": 8.0}),
    }


@contextlib.asynccontextmanager
async def replicated_mesh(
    data_dir: Path, postgres: PrivatePostgres, redis_url: str, prefix: str
) -> AsyncIterator[ReplicatedMesh]:
    """Start the mesh with two replicas of everything, seed it, and authorise a consent."""
    ports = {name: free_port() for name, _ in PROCESSES}
    replica_ports = {name: [port, free_port()] for name, port in ports.items()}
    mesh = LocalMesh(
        data_dir,
        ports=ports,
        quiet=os.environ.get("OBM_TEST_MESH_OUTPUT") != "1",
        extra_env=replicated_env(postgres, redis_url, prefix, data_dir),
        replicas=2,
        replica_ports=replica_ports,
        ready_timeout=180,  # ten processes starting at once on a busy machine
    )
    try:
        await mesh.start()
    except BaseException:
        await mesh.stop(grace=5)
        raise
    operator = Operator(data_dir, ports=ports)
    attempts = AttemptLog()
    gateways = ",".join(f"127.0.0.1:{port}" for port in replica_ports["gateway"])
    channel = grpc.aio.insecure_channel(
        f"ipv4:{gateways}",
        options=[("grpc.service_config", json.dumps({"loadBalancingConfig": [{"round_robin": {}}]}))],
        interceptors=[attempts],
    )
    try:
        demo = await seed_demo_data(operator, say=lambda _: None)
        partner, customer = demo["partners"]["acme"], demo["customers"]["alice"]
        setup = grpc.aio.insecure_channel(f"127.0.0.1:{ports['gateway']}")
        try:
            tokens = token_pb2_grpc.TokenServiceStub(setup)
            client_token = await client_credentials_token(tokens, partner)
            consent, verifier = await create_payment_consent(
                consent_pb2_grpc.ConsentServiceStub(setup),
                client_token.access_token,
                per_payment_minor=10_000,
                reads_per_day=0,  # no daily allowance: the load reads all the time
                valid_for=dt.timedelta(days=1),
            )
            authorised = await _authorise(operator, consent.name, customer)
            bound = await exchange_code(tokens, partner, authorised.authorization_code, verifier)
        finally:
            await setup.close()
        invoker = Invoker(retry=PATIENT, timeout=20.0, customer_ip_address="198.51.100.7")
        token = _Bearer(bound.access_token)
        yield ReplicatedMesh(
            mesh,
            postgres,
            operator,
            channel,
            attempts,
            invoker,
            token,
            customer["account"],
            partner["partner"],
            partner["participant"],
        )
    finally:
        await channel.close()
        await operator.close()
        await mesh.stop(grace=10)
