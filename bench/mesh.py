"""The mesh under test: five production processes on free ports, seeded, with consents.

``BenchMesh`` is ``meshcli.mesh.LocalMesh`` plus per-process environment (each service its
own PostgreSQL database; LocalMesh gives every child the same environment). The partner's
consent-bound tokens come from the real flow: client credentials -> CreateConsent ->
the bank app's AuthoriseConsent with a TOTP code -> PKCE code exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meshcli.demo import _authorise, _bearer, client_credentials_token, create_payment_consent, exchange_code
from meshcli.mesh import PROCESSES, LocalMesh
from meshcli.operator import Operator
from meshcli.seed import seed_demo_data
from openbank.identity.v1 import consent_pb2_grpc, token_pb2_grpc
from tests.support.servers import create_database, free_port

# Limits far above anything the bench reaches: the limiter still runs its full decision
# (and its Redis round trip) on every call, but never refuses one.
BENCH_RATELIMITS = """\
default_tier: bench
tiers:
  bench: &unlimited
    token:      {rate: 1000000, per: second, burst: 1000000}
    token_per_client: {rate: 1000000, per: second, burst: 1000000}
    consents:   {rate: 1000000, per: second, burst: 1000000}
    reads:      {rate: 1000000, per: second, burst: 1000000}
    payments:   {rate: 1000000, per: second, burst: 1000000}
    streams:    {rate: 1000000, per: second, burst: 1000000}
    settlement: {rate: 1000000, per: second, burst: 1000000}
  bronze: *unlimited
  silver: *unlimited
  gold: *unlimited
classes:
  payments: {on_backend_failure: fail_closed}
unattended_reads_per_day: 1000000
max_streams_per_partner: 1000
"""

# The anti-fraud velocity rules would (rightly) stop one customer paying hundreds of times
# a second; the bench keeps the rules running with thresholds it never reaches.
BENCH_VELOCITY_RULES = """\
rules:
  - name: payments_per_customer_per_minute
    kind: max_payments_per_window
    window_seconds: 60
    max_count: 100000000
  - name: first_payment_to_new_beneficiary
    kind: new_beneficiary_threshold
    threshold_minor: 500000
  - name: amount_far_above_average
    kind: amount_vs_average
    multiplier: 1000000
    min_history: 3
"""

CUSTOMER_IP = ("x-fapi-customer-ip-address", "198.51.100.7")  # the customer is present: attended reads


class BenchMesh(LocalMesh):
    """LocalMesh plus what the benchmark needs to watch its processes."""

    def pids(self) -> dict[str, int]:
        """Process id of each running child, by service name."""
        return {c.label: c.process.pid for c in self.children if c.process and c.process.returncode is None}


@dataclass
class Payer:
    """A customer's consent-bound access: metadata for calls and the consented account."""

    username: str
    account: str
    metadata: tuple[tuple[str, str], ...]


@dataclass
class RunningMesh:
    """What scenarios need from a started, seeded mesh."""

    mesh: BenchMesh
    store: str
    limiter: str
    demo: dict[str, Any]
    payers: list[Payer] = field(default_factory=list)

    @property
    def ports(self) -> dict[str, int]:
        """Port of each process."""
        return self.mesh.ports

    @property
    def creditor_wallet(self) -> str:
        """The partner (wallet) the bench's top-ups credit."""
        return self.demo["partners"]["acme"]["partner"]


async def _service_databases(postgres: Any, run_id: str) -> dict[str, dict[str, str]]:
    """A fresh database per process on the bench's PostgreSQL (services own their data)."""
    env: dict[str, dict[str, str]] = {}
    for name, _module in PROCESSES:
        url = await create_database(postgres, f"bench_{run_id}_{name}")
        env[name] = {"OBM_DATABASE_URL": url}
    return env


async def _consent_for(operator: Operator, gateway: Any, partner: dict[str, Any], customer: dict[str, Any]) -> Payer:
    """The real consent flow for one customer; returns its bound token's metadata."""
    tokens = token_pb2_grpc.TokenServiceStub(gateway)
    consents = consent_pb2_grpc.ConsentServiceStub(gateway)
    client_token = await client_credentials_token(tokens, partner)
    consent, verifier = await create_payment_consent(
        consents,
        client_token.access_token,
        per_payment_minor=50_000,
        reads_per_day=0,  # unlimited: the bench reads far more than a partner may
        valid_for=dt.timedelta(days=1),
    )
    authorised = await _authorise(operator, consent.name, customer)
    bound = await exchange_code(tokens, partner, authorised.authorization_code, verifier)
    return Payer(customer["username"], customer["account"], (*_bearer(bound.access_token), CUSTOMER_IP))


async def _started(
    data_dir: Path, extra_env: dict[str, str], child_env: dict[str, dict[str, str]], payment_replicas: int
) -> BenchMesh:
    """A started mesh on free ports; once more on other ports if a process exits while starting
    (on a machine shared with other test runs, a port found free may be taken before it binds)."""
    for attempt in (1, 2):
        # The scheme simulator too: the mix scenario pays other banks through it.
        ports = {name: free_port() for name in (*(name for name, _ in PROCESSES), "schemesim")}
        replica_ports = {"payment": [ports["payment"], *(free_port() for _ in range(payment_replicas - 1))]}
        mesh = BenchMesh(
            data_dir,
            ports=ports,
            extra_env=extra_env,
            quiet=True,
            child_env=child_env,
            replica_ports=replica_ports if payment_replicas > 1 else None,
        )
        try:
            await mesh.start()
            return mesh
        except RuntimeError:
            await mesh.stop()
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def running_mesh(
    work_dir: Path,
    *,
    store: str,
    limiter: str,
    postgres: Any = None,
    redis_url: str | None = None,
    process_env: dict[str, dict[str, str]] | None = None,
    payment_replicas: int = 1,
    before_start: Callable[[Path, dict[str, dict[str, str]]], Awaitable[None]] | None = None,
) -> AsyncIterator[RunningMesh]:
    """Start, seed and authorise a mesh; stop it afterwards (``process_env``: extra settings per
    process; ``payment_replicas``: that many payment processes, balanced round robin by the
    gateway as ``up --replicas`` does; ``before_start``: fills the stores first, given the data
    directory and each process's settings)."""
    run_id = uuid.uuid4().hex[:8]
    data_dir = work_dir / f"mesh-{store}-{limiter}-{run_id}"
    data_dir.mkdir(parents=True)
    (data_dir / "bench-ratelimits.yaml").write_text(BENCH_RATELIMITS)
    (data_dir / "bench-velocity.yaml").write_text(BENCH_VELOCITY_RULES)
    child_env: dict[str, dict[str, str]] = {}
    if store == "postgres":
        child_env = await _service_databases(postgres, run_id)
    child_env.setdefault("gateway", {})["OBM_RATELIMIT_CONFIG_FILE"] = str(data_dir / "bench-ratelimits.yaml")
    child_env.setdefault("payment", {})["OBM_VELOCITY_RULES_FILE"] = str(data_dir / "bench-velocity.yaml")
    # Tokens outlive a whole bench run (the default 300 s would expire mid-run).
    child_env.setdefault("identity", {})["OBM_ACCESS_TOKEN_TTL_SECONDS"] = "3600"
    for name, values in (process_env or {}).items():
        child_env.setdefault(name, {}).update(values)
    # Logs as a deployment writes them (deploy/k8s/base: INFO, JSON lines): the gateway's
    # audit record of every call is part of what a call costs.
    extra_env = {"OBM_LOG_LEVEL": "INFO", "OBM_LOG_FORMAT": "json"}
    if limiter == "redis" and redis_url:
        extra_env["OBM_REDIS_URL"] = redis_url  # as in production: the limiter and the invalidation bus
    if before_start is not None:
        await before_start(data_dir, child_env)
    mesh = await _started(data_dir, extra_env, child_env, payment_replicas)
    ports = mesh.ports
    try:
        operator = Operator(data_dir, ports=ports)
        try:
            demo = await seed_demo_data(operator, say=lambda _text: None)
            gateway = operator.channel("gateway")
            partner = demo["partners"]["acme"]
            payers = await asyncio.gather(
                *(_consent_for(operator, gateway, partner, customer) for customer in demo["customers"].values())
            )
        finally:
            await operator.close()
        yield RunningMesh(mesh, store, limiter, demo, list(payers))
    finally:
        await mesh.stop()
