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
from meshlib.auth.wiring import TTL_WITH_BUS_SECONDS
from meshlib.grpc_errors import decode_rpc_error
from openbank.account.v1 import account_admin_pb2, account_admin_pb2_grpc, account_pb2, account_pb2_grpc
from openbank.common.v1 import money_pb2
from openbank.identity.v1 import consent_pb2, consent_pb2_grpc, token_pb2, token_pb2_grpc
from openbank.payment.v1 import payment_admin_pb2, payment_admin_pb2_grpc, payment_pb2, payment_pb2_grpc
from openbank.settlement.v1 import (
    settlement_admin_pb2,
    settlement_admin_pb2_grpc,
    settlement_pb2,
    settlement_pb2_grpc,
)
from tests.support.servers import PrivatePostgres, free_port

# Patient enough to ride out PostgreSQL stopped for 6 s or a replica restarting: about a
# minute of retries (each waits the mesh's RetryInfo, 0.5 s). After an immediate stop the
# database's crash recovery and the services' reconnection took up to 20 s on a loaded
# machine, and 40 attempts (20 s) gave up on calls that started as it stopped.
PATIENT = RetryPolicy(max_attempts=120, initial_backoff=0.1, max_backoff=0.5)
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
    demo: dict[str, Any] = field(default_factory=dict)
    load: Load = field(default_factory=Load)
    _direct: dict[int, grpc.aio.Channel] = field(default_factory=dict)

    def channel_to(self, port: int) -> grpc.aio.Channel:
        """A channel to one process (one replica), kept for the module."""
        if port not in self._direct:
            self._direct[port] = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        return self._direct[port]

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
        unknown, lost = set(new) - set(self.load.payments), set(self.load.payments) - set(new)
        assert not unknown and not lost, (
            f"payments the load was not answered: {[(n, new[n].state, new[n].status_reason) for n in unknown]}; "
            f"answered but not found: {sorted(lost)}; calls given up: {self.load.gave_up}"
        )
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
    running: ReplicatedMesh | None = None
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
        running = ReplicatedMesh(
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
            demo,
        )
        yield running
    finally:
        await channel.close()
        for direct in running._direct.values() if running is not None else ():
            await direct.close()
        await operator.close()
        await mesh.stop(grace=10)


# A revoked token or consent is refused with one of these (by the gateway or the service).
REVOKED = frozenset({"TOKEN_REVOKED", "CONSENT_REVOKED"})
# Each process caches a token's status for TTL_WITH_BUS_SECONDS; the bus ends it at once, and
# a message the bus lost (its Redis shard failing over) only lets it live out that TTL. The
# bound allows the status fetch after it on a loaded machine; a token is watched until the
# TTL has passed since its revocation (a stale cache would serve it until then).
REVOCATION_BOUND_SECONDS = TTL_WITH_BUS_SECONDS + 5.0
WATCHED_SECONDS = TTL_WITH_BUS_SECONDS + 1.0
# How often every replica is asked while a revocation is watched (six calls each time).
POLL_SECONDS = 0.25


@dataclass
class Revoked:
    """One revocation issued during the run: what, when, and how long until every replica refused."""

    what: str
    token: str
    issued: float
    took_effect: float = -1.0  # seconds after it was issued; -1: not yet


class Revocations:
    """Acme's two other consents, over bob's account: tokens of the first are used on every
    replica (so every cache holds them as active) and then revoked one at a time during the
    run (RevokeToken); the second consent is revoked as a whole (RevokeConsent). Each must be
    refused by every gateway, account and payment replica within ``REVOCATION_BOUND_SECONDS``,
    and still at the end of the run."""

    def __init__(self, mesh: ReplicatedMesh) -> None:
        self.mesh = mesh
        self.partner = mesh.demo["partners"]["acme"]
        self.customer = mesh.demo["customers"]["bob"]
        self.revoked: list[Revoked] = []
        self.fresh: list[str] = []  # access tokens of the first consent, not used yet
        self.client_token = ""
        self.refresh = ""  # of the first consent: a fresh access token for each revocation
        self.consent = ""  # the second
        self.consent_token = ""

    def _replicas(self, service: str) -> list[tuple[str, grpc.aio.Channel]]:
        """(label, channel) of each replica of ``service`` whose process runs now."""
        return [
            (child.label, self.mesh.channel_to(child.port))
            for child in self.mesh.mesh.children
            if child.name == service and child.process is not None and child.process.returncode is None
        ]

    async def prepare(self) -> None:
        """Both consents (bob authorises each in the bank's app) and their first tokens."""
        gateway = self.mesh.channel_to(self.mesh.mesh.ports["gateway"])
        tokens = token_pb2_grpc.TokenServiceStub(gateway)
        self.client_token = (await client_credentials_token(tokens, self.partner)).access_token
        bound = []
        for _ in range(2):
            consent, verifier = await create_payment_consent(
                consent_pb2_grpc.ConsentServiceStub(gateway),
                self.client_token,
                per_payment_minor=100,
                reads_per_day=0,
                valid_for=dt.timedelta(days=1),
            )
            authorised = await _authorise(self.mesh.operator, consent.name, self.customer)
            exchanged = await exchange_code(tokens, self.partner, authorised.authorization_code, verifier)
            bound.append((consent.name, exchanged))
        self.refresh = bound[0][1].refresh_token
        self.consent, self.consent_token = bound[1][0], bound[1][1].access_token

    async def mint(self, count: int) -> None:
        """``count`` more access tokens of the first consent, one refresh after the other (a
        refresh token works once: two at once, or a retry of one that was answered, would be
        a reuse, and identity revokes the whole family). Call it while no fault runs."""
        stub = token_pb2_grpc.TokenServiceStub(self.mesh.partner_channel)
        for _ in range(count):
            answer = await stub.IssueToken(
                token_pb2.IssueTokenRequest(
                    grant_type=token_pb2.GRANT_TYPE_REFRESH_TOKEN,
                    client_id=self.partner["client_id"],
                    client_secret=self.partner["client_secret"],
                    refresh_token=self.refresh,
                ),
                timeout=10,
            )
            self.refresh = answer.refresh_token
            self.fresh.append(answer.access_token)

    async def _answer(self, service: str, channel: grpc.aio.Channel, token: str) -> str:
        """One read with ``token`` on one replica: "" when served, else the reason refused."""
        metadata = (("authorization", f"Bearer {token}"), ("x-fapi-customer-ip-address", "198.51.100.7"))
        try:
            if service == "payment":
                await payment_pb2_grpc.PaymentServiceStub(channel).ListPayments(
                    payment_pb2.ListPaymentsRequest(page_size=1), metadata=metadata, timeout=5
                )
            else:
                await account_pb2_grpc.AccountServiceStub(channel).GetBalance(
                    account_pb2.GetBalanceRequest(account=self.customer["account"]), metadata=metadata, timeout=5
                )
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return "UNAVAILABLE"  # a replica or its peer is down: no answer either way yet
            return decode_rpc_error(error).reason or error.code().name
        return ""

    async def answers(self, token: str) -> dict[str, str]:
        """Every running gateway, account and payment replica's answer to ``token``."""
        asked = [
            (label, service, channel)
            for service in ("gateway", "account", "payment")
            for label, channel in self._replicas(service)
        ]
        got = await asyncio.gather(*(self._answer(service, channel, token) for _, service, channel in asked))
        return {label: answer for (label, _, _), answer in zip(asked, got, strict=True)}

    async def _until(self, token: str, done: Any, what: str, timeout: float) -> float:
        began = time.monotonic()
        while True:
            answers = await self.answers(token)
            if done(answers):
                return time.monotonic() - began
            assert time.monotonic() - began < timeout, f"{what} within {timeout:g} s: {answers}"
            await asyncio.sleep(POLL_SECONDS)

    async def _used_everywhere(self, token: str) -> None:
        """Served by every running replica (each now holds the token as active)."""
        await self._until(
            token,
            lambda a: all(v in ("", "UNAVAILABLE") for v in a.values()) and "" in a.values(),
            "served before it was revoked",
            60,
        )

    async def _took_effect(self, revoked: Revoked) -> None:
        """Until no replica serves the token (each answering refuses it; one restarting or cut
        off from identity may not answer at all), then on until the status caches' TTL has
        passed: none may serve it again. ``took_effect``: seconds from the revocation to the
        first such moment, at most ``REVOCATION_BOUND_SECONDS``."""
        while True:
            answers = await self.answers(revoked.token)
            served = [label for label, answer in answers.items() if answer == ""]
            elapsed = time.monotonic() - revoked.issued
            if revoked.took_effect >= 0:
                assert not served, f"{revoked.what} revoked and refused, then served again: {answers}"
            elif not served and set(answers.values()) & REVOKED:
                assert set(answers.values()) <= REVOKED | {"UNAVAILABLE"}, answers
                revoked.took_effect = elapsed
            if revoked.took_effect < 0:
                # Served past the bound fails; none answering (a loaded machine) is waited out.
                assert not served or elapsed <= REVOCATION_BOUND_SECONDS, (
                    f"{revoked.what} still served {elapsed:.1f} s after it was revoked: {answers}"
                )
                assert elapsed <= 60, f"{revoked.what}: no replica answered for a minute: {answers}"
            elif elapsed > WATCHED_SECONDS:
                return
            await asyncio.sleep(POLL_SECONDS)

    async def revoke_token(self) -> Revoked:
        """Use a fresh token everywhere, revoke it (the partner's RevokeToken, retried while
        the mesh answers UNAVAILABLE), watch every replica refuse it."""
        token = self.fresh.pop()
        await self._used_everywhere(token)
        gateway = token_pb2_grpc.TokenServiceStub(self.mesh.partner_channel)
        request = token_pb2.RevokeTokenRequest(
            client_id=self.partner["client_id"], client_secret=self.partner["client_secret"], token=token
        )
        await self.mesh.invoker.unary(gateway.RevokeToken, request, None)
        revoked = Revoked("token", token, time.monotonic())  # identity answered: it is revoked
        self.revoked.append(revoked)
        await self._took_effect(revoked)
        return revoked

    async def revoke_consent(self) -> Revoked:
        """Use the second consent's token everywhere, revoke the consent (the partner's
        RevokeConsent), watch every replica refuse its token."""
        token = self.consent_token
        await self._used_everywhere(token)
        consents = consent_pb2_grpc.ConsentServiceStub(self.mesh.partner_channel)
        request = consent_pb2.RevokeConsentRequest(request_id=uuid.uuid4().hex, name=self.consent)
        await self.mesh.invoker.unary(consents.RevokeConsent, request, _Bearer(self.client_token), mutating=True)
        revoked = Revoked("consent", token, time.monotonic())
        self.revoked.append(revoked)
        await self._took_effect(revoked)
        return revoked

    async def check_all_refused(self) -> None:
        """After the run: every token revoked during it is refused by every replica."""
        for revoked in self.revoked:
            assert 0 <= revoked.took_effect <= REVOCATION_BOUND_SECONDS, revoked
            answers = await self.answers(revoked.token)
            assert set(answers.values()) <= REVOKED, (revoked.what, answers)
