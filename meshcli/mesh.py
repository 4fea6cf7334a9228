"""Run the whole mesh locally: five gRPC processes and the bank's web app, readiness shown,
clean stop on Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bankweb.console.grpc_mesh import CONSOLE_SCOPES
from meshcli.console_operators import OPERATORS_FILE, local_operators
from meshcli.operator import ClientTls
from meshcli.replicas import LocalStores, ports_of_replicas, record_replicas, replica_targets, stores_env
from meshcli.targets import mesh_file_tls, ports_from_base, remove_mesh_file, write_mesh_file
from meshlib.app import DEFAULT_PORTS

# Start order: identity first (everyone verifies its tokens), the gateway last.
PROCESSES: tuple[tuple[str, str], ...] = (
    ("identity", "services.identity"),
    ("account", "services.account"),
    ("settlement", "services.settlement"),
    ("payment", "services.payment"),
    ("gateway", "gateway"),
)
# The scheme simulator ("another bank" behind the interbank clearing scheme), started before
# payment when its port is given (``make up``, the demo and the tests that pay other banks do).
SCHEME_PROCESS = ("schemesim", "schemesim")
# HTTP processes, started after the gRPC ones when their port is given (``make up`` does):
# the bank's web app (customer sign-in and consent authorisation), a client of identity and account.
# The operator console (bankweb.console), a client of all four services.
WEB_PROCESSES: tuple[tuple[str, str], ...] = (("bankweb", "bankweb"), ("console", "bankweb.console"))


# The mesh's own OAuth clients and their scopes (identity issues their tokens).
INTERNAL_CLIENT_SCOPES: dict[str, tuple[str, ...]] = {
    "gateway": ("tokens:introspect", "consents:read"),
    # events:write: its relay hands postings on customers' accounts to the partner event log.
    "account": ("consents:read", "tokens:introspect", "events:write"),
    "settlement": ("ledger:read", "ledger:write", "tokens:introspect"),
    "payment": (
        "ledger:write",
        "ledger:read",
        "settlement:write",
        "settlement:admin",
        "consents:read",
        "identity:admin",
        "tokens:introspect",
        "scheme:write",
        "scheme:read",
        # Its outbox relay hands payment events to identity's partner event log.
        "events:write",
    ),
    # The local operator (CLI) and the bank's customer app, for `openbank-mesh` commands.
    "operator": (
        "identity:admin",
        "ledger:admin",
        "ledger:read",
        "ledger:write",
        "settlement:admin",
        "settlement:write",
        "settlement:read",
        "payments:admin",
        "tokens:introspect",
        "consents:read",
        "audit:read",
    ),
    "bank-app": ("consents:authorise",),
    # The bank's web app process (bankweb/): authorisation pages and the customer's dashboard
    # (audit:read: payment's trail, for the payments a wallet made with a consent).
    "bankweb": ("consents:authorise", "audit:read"),
    # The operator console (bankweb/console/): partner names, positions, window actions,
    # the payments search, the audit trails.
    "console": CONSOLE_SCOPES,
}


def internal_credentials(data_dir: Path) -> dict[str, str]:
    """Client secrets of the local mesh's internal clients, created once under ``data_dir``.

    Kept in a file readable only by the owner, so operator commands can use them and a
    restart of the mesh keeps working with the same data.
    """
    path = data_dir / "internal-clients.json"
    if path.exists():
        stored = json.loads(path.read_text())
        if set(stored) >= set(INTERNAL_CLIENT_SCOPES):
            return stored
    data_dir.mkdir(parents=True, exist_ok=True)
    created = {name: secrets.token_urlsafe(24) for name in INTERNAL_CLIENT_SCOPES}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(created, handle)
    return created


@dataclass
class MeshProcess:
    """One child process of the local mesh."""

    name: str
    module: str
    port: int
    process: asyncio.subprocess.Process | None = None
    env: dict[str, str] = field(default_factory=dict)
    # 1 for the first process of a service; 2.. for the others of `up --replicas N`.
    replica: int = 1
    launch_env: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """``account``, or ``account-2`` for its second replica."""
        return self.name if self.replica == 1 else f"{self.name}-{self.replica}"


# (The console keeps its operators' audit trail in one: bankweb.console.audit_store.)
SERVICES_WITH_DATABASES = ("identity", "account", "payment", "settlement", "console")


def service_databases(shared_url: str) -> dict[str, str]:
    """One database per service on the server a shared URL names: ``<db>_<service>``."""
    from sqlalchemy.engine import make_url

    url = make_url(shared_url)
    if url.get_backend_name() != "postgresql":
        raise SystemExit("DATABASE_URL must name a PostgreSQL server (postgresql://...)")
    base = url.database or "openbank"
    return {
        name: url.set(database=f"{base}_{name}").render_as_string(hide_password=False)
        for name in SERVICES_WITH_DATABASES
    }


async def create_missing_databases(urls: Iterable[str]) -> None:
    """Create each service's database on first start (idempotent)."""
    import asyncpg
    from sqlalchemy.engine import make_url

    for raw in urls:
        url = make_url(raw)
        admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
        connection = await asyncpg.connect(admin)
        try:
            exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", url.database)
            if not exists:
                await connection.execute(f'CREATE DATABASE "{url.database}"')
        finally:
            await connection.close()


# What identity "sends" customers on the local mesh (one JSON line per message; production
# wires a real sender): a new customer's activation code, read from here in the demo and tests.
CUSTOMER_NOTIFICATIONS_FILE = "customer-notifications.jsonl"


def mesh_environment(
    data_dir: Path, host: str, ports: dict[str, int], base: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment shared by every process: where the peers are and where data lives."""
    env = dict(os.environ if base is None else base)
    env.setdefault("OBM_LOG_FORMAT", "console")
    env["OBM_DATA_DIR"] = str(data_dir)
    # The local mesh runs on development secrets (identity refuses them anywhere else).
    env["OBM_ALLOW_DEV_SECRETS"] = "true"
    # A sandbox: the demo's test customers have published TOTP secrets (meshcli/seed.py).
    env["OBM_SANDBOX_CUSTOMER_SECRETS"] = "true"
    # A wallet under test on this machine may take pushed events over plaintext (a sandbox only).
    env["OBM_EVENT_PUSH_ALLOW_INSECURE"] = "true"
    env["OBM_HOST"] = host
    for name in ("identity", "account", "payment", "settlement"):
        env[f"OBM_{name.upper()}_TARGET"] = f"127.0.0.1:{ports[name]}"
    return env


async def wait_http_ok(port: int, timeout: float = 30.0) -> bool:
    """Poll an HTTP process's /healthz until it answers 200."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=1.0) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return True
            await asyncio.sleep(0.1)
    return False


async def wait_serving(port: int, timeout: float = 30.0, tls: ClientTls | None = None) -> bool:
    """Poll the standard health check until the process answers SERVING (over TLS with ``tls``)."""
    deadline = time.monotonic() + timeout
    target = f"127.0.0.1:{port}"
    channel = grpc.aio.secure_channel(target, tls.credentials()) if tls else grpc.aio.insecure_channel(target)
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            await asyncio.sleep(0.1)
    return False


class LocalMesh:
    """Starts, watches and stops the five processes."""

    def __init__(
        self,
        data_dir: Path,
        host: str = "127.0.0.1",
        ports: dict[str, int] | None = None,
        extra_env: dict[str, str] | None = None,
        quiet: bool = False,
        child_env: dict[str, dict[str, str]] | None = None,
        replicas: int = 1,
        replica_ports: dict[str, list[int]] | None = None,
        ready_timeout: float = 60.0,
    ) -> None:
        self.ports = dict(DEFAULT_PORTS if ports is None else ports)
        self.data_dir = data_dir
        self.credentials = internal_credentials(data_dir)
        self.env = mesh_environment(data_dir, host, self.ports)
        self.env["OBM_INTERNAL_CLIENTS"] = json.dumps(
            [
                {"client_id": name, "secret": self.credentials[name], "scopes": list(scopes)}
                for name, scopes in INTERNAL_CLIENT_SCOPES.items()
            ]
        )
        self.env.update(extra_env or {})
        # Per-process settings (e.g. each service's own OBM_DATABASE_URL).
        self.child_env = {name: dict(values) for name, values in (child_env or {}).items()}
        self.quiet = quiet
        # Processes serving TLS (OBM_TLS_CERT_FILE): the readiness checks and the operator
        # commands (through mesh.json) use the processes' own client files and CA.
        self.tls = (
            ClientTls(
                Path(self.env["OBM_PEER_TLS_CA_FILE"]),
                Path(self.env["OBM_PEER_TLS_CERT_FILE"]) if self.env.get("OBM_PEER_TLS_CERT_FILE") else None,
                Path(self.env["OBM_PEER_TLS_KEY_FILE"]) if self.env.get("OBM_PEER_TLS_KEY_FILE") else None,
            )
            if self.env.get("OBM_TLS_CERT_FILE") and self.env.get("OBM_PEER_TLS_CA_FILE")
            else None
        )
        # A DATABASE_URL names a PostgreSQL server for the whole mesh: each service still gets
        # its own database on it (services never share tables).
        shared_url = self.env.pop("OBM_DATABASE_URL", None) or self.env.pop("DATABASE_URL", None)
        self.service_databases = service_databases(shared_url) if shared_url else {}
        for name, url in self.service_databases.items():
            self.child_env.setdefault(name, {}).setdefault("OBM_DATABASE_URL", url)
        self.children = [MeshProcess(name, module, self.ports[name]) for name, module in PROCESSES]
        if SCHEME_PROCESS[0] in self.ports:
            # Before payment, whose connector it answers; its own database like a service's.
            self.children.insert(
                [c.name for c in self.children].index("payment"), MeshProcess(*SCHEME_PROCESS, self.ports["schemesim"])
            )
            self.env["OBM_SCHEME_TARGET"] = f"127.0.0.1:{self.ports['schemesim']}"
        # `up --replicas N`: the other processes of each service, and every process finds a
        # service by all its replicas' addresses (meshcli.replicas).
        # (Tests pick every replica's port themselves: replica_ports.)
        self.ready_timeout = ready_timeout  # per process, from when all were started
        self.replica_ports = replica_ports or (ports_of_replicas(self.ports, replicas) if replicas > 1 else {})
        self.env.update(replica_targets(self.replica_ports))
        for name, module in PROCESSES if self.replica_ports else ():
            for index, port in enumerate(self.replica_ports.get(name, [])[1:], start=2):
                extra = {"OBM_AUDIT_REPLICA": f"{socket.gethostname()}-{index}"} if name == "gateway" else {}
                self.children.append(MeshProcess(name, module, port, env=extra, replica=index))
        self.children += [
            MeshProcess(name, module, self.ports[name]) for name, module in WEB_PROCESSES if name in self.ports
        ]

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)

    async def start(self) -> None:
        """Start every process and wait until each answers SERVING; fail at once with the cause
        when a port is taken or a process exits while starting."""
        taken = [f"{c.name} :{c.port}" for c in self.children if port_taken(c.port)]
        if taken:
            raise RuntimeError(f"port already in use: {', '.join(taken)} (another mesh? try --base-port)")
        if self.service_databases:
            await create_missing_databases(self.service_databases.values())
        for child in self.children:
            env = dict(self.env, OBM_PORT=str(child.port), OBM_SERVICE_NAME=child.name)
            if child.name in self.credentials:
                env["OBM_SERVICE_CLIENT_ID"] = child.name
                env["OBM_SERVICE_CLIENT_SECRET"] = self.credentials[child.name]
            if child.name == "identity":
                # The local sender of messages to customers (a new customer's activation code).
                env.setdefault("OBM_CUSTOMER_NOTIFICATIONS_FILE", str(self.data_dir / CUSTOMER_NOTIFICATIONS_FILE))
            if child.name != "identity":
                env.pop("OBM_INTERNAL_CLIENTS", None)  # only identity knows the client list
            elif "bankweb" in self.ports:
                # New customers' activation pages (account opening through a partner).
                env.setdefault("OBM_BANK_WEB_URL", f"http://127.0.0.1:{self.ports['bankweb']}")
            if child.name == "account" and "bankweb" in self.ports:
                # Credit offers' acceptance pages (the credit line offered through a partner).
                env.setdefault("OBM_BANK_WEB_URL", f"http://127.0.0.1:{self.ports['bankweb']}")
            if child.name == "bankweb":
                # Plain http on 127.0.0.1: no Secure cookies (every other deployment keeps them).
                env.update(OBM_BANKWEB_PORT=str(child.port), OBM_BANKWEB_SECURE_COOKIES="false")
            if child.name == "console":
                local_operators(self.data_dir)  # rita (read-only), oscar (operator), ada (admin)
                env.update(
                    OBM_CONSOLE_PORT=str(child.port),
                    OBM_CONSOLE_SECURE_COOKIES="false",
                    OBM_CONSOLE_OPERATORS_FILE=str(self.data_dir / OPERATORS_FILE),
                )
            env.update(self.child_env.get(child.name, {}))
            env.update(child.env)  # this replica's own settings
            child.launch_env = env
            child.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                child.module,
                env=env,
                stdout=subprocess_out(self.quiet),
                stderr=subprocess_out(self.quiet),
            )
            self._say(f"  starting {child.name:<10} pid {child.process.pid} on :{child.port}")
        for child in self.children:
            web = child.name in dict(WEB_PROCESSES)
            if not await self._ready_unless_exited(child, self.children, self.ready_timeout):
                raise RuntimeError(
                    f"{child.name} did not become ready on port {child.port} within {self.ready_timeout:g} s"
                )
            self._say(f"  ready    {child.name:<10} {'HTTP 200' if web else 'SERVING'} on 127.0.0.1:{child.port}")
        write_mesh_file(self.data_dir, self.ports, tls=mesh_file_tls(self.tls))
        if self.replica_ports:
            record_replicas(self.data_dir, self.replica_ports)

    async def _ready_unless_exited(self, child: MeshProcess, watched: list[MeshProcess], timeout: float) -> bool:
        """Wait until ``child`` is ready (False: not within ``timeout``); raise at once, naming
        it and its exit code, when one of ``watched`` exits meanwhile."""
        web = child.name in dict(WEB_PROCESSES)
        ready = asyncio.ensure_future(
            wait_http_ok(child.port, timeout=timeout)
            if web
            else wait_serving(child.port, timeout=timeout, tls=self.tls)
        )
        exits = [asyncio.ensure_future(c.process.wait()) for c in watched if c.process]
        await asyncio.wait([ready, *exits], return_when=asyncio.FIRST_COMPLETED)
        for waiter in exits:
            waiter.cancel()
        dead = [c for c in watched if c.process and c.process.returncode is not None]
        if dead:
            ready.cancel()
            first = dead[0]
            assert first.process is not None
            raise RuntimeError(
                f"{first.label} exited with code {first.process.returncode} while starting"
                + ("" if self.quiet else " (its output is above)")
            )
        return bool(ready.result())

    async def stop(self, grace: float = 8.0) -> list[int | None]:
        """SIGTERM everyone (gateway first), wait for the drain, kill stragglers."""
        remove_mesh_file(self.data_dir)
        for child in reversed(self.children):
            if child.process and child.process.returncode is None:
                child.process.send_signal(signal.SIGTERM)
        codes: list[int | None] = []
        for child in reversed(self.children):
            if child.process is None:
                codes.append(None)
                continue
            try:
                codes.append(await asyncio.wait_for(child.process.wait(), grace))
            except TimeoutError:
                child.process.kill()
                codes.append(await child.process.wait())
        return codes

    def replica(self, name: str, index: int = 1) -> MeshProcess:
        """The process of replica ``index`` of ``name``."""
        return next(c for c in self.children if c.name == name and c.replica == index)

    def kill(self, child: MeshProcess, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one process (SIGKILL: a crash; SIGSTOP/SIGCONT: a hang and its end)."""
        assert child.process is not None
        child.process.send_signal(sig)

    async def restart(self, child: MeshProcess, timeout: float | None = None) -> None:
        """Start a process that exited again, as it was started, and wait until it serves
        (within ``timeout``, by default the mesh's readiness timeout)."""
        timeout = self.ready_timeout if timeout is None else timeout
        assert child.process is not None
        await child.process.wait()
        child.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            child.module,
            env=child.launch_env,
            stdout=subprocess_out(self.quiet),
            stderr=subprocess_out(self.quiet),
        )
        # A replica that dies at start-up (its port taken, a bad setting) fails the restart
        # at once with its exit code, not after the whole timeout.
        if not await self._ready_unless_exited(child, [child], timeout):
            raise RuntimeError(f"{child.label} did not serve again on port {child.port} within {timeout:g} s")

    async def wait_any_exit(self) -> MeshProcess:
        """Return the first child that exits on its own."""
        waits = {asyncio.ensure_future(c.process.wait()): c for c in self.children if c.process}
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return waits[next(iter(done))]


def port_taken(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something already listens on ``port`` (a mesh left running, another program)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def subprocess_out(quiet: bool) -> int | None:
    """Children log to our terminal unless quiet."""
    return asyncio.subprocess.DEVNULL if quiet else None


async def run_up(
    data_dir: Path,
    base_port: int = DEFAULT_PORTS["gateway"],
    *,
    replicas: int = 1,
    stores: LocalStores | None = None,
    ready_timeout: float = 120.0,
) -> int:
    """``openbank-mesh up``: run until Ctrl-C / SIGTERM, then stop everything cleanly.

    With ``replicas`` > 1, that many processes of every service and the gateway, on ``stores``
    (PostgreSQL and Redis, :func:`meshcli.replicas.local_stores`).
    """
    mesh = LocalMesh(
        data_dir,
        ports=ports_from_base(base_port),
        replicas=replicas,
        extra_env=stores_env(stores),
        ready_timeout=ready_timeout,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store = "PostgreSQL (a database per service)" if mesh.service_databases else f"SQLite under {data_dir}/"
    limiter = (
        "Redis rate limiter" if mesh.env.get("OBM_REDIS_URL") or mesh.env.get("REDIS_URL") else "in-process limiter"
    )
    print(f"OpenBank Mesh: starting {len(mesh.children)} processes ({store}, {limiter})", flush=True)
    if replicas > 1:
        print(
            f"  {replicas} replicas of every service and the gateway, balanced round robin"
            + (f"; started {stores.started}" if stores and stores.started else ""),
            flush=True,
        )
    try:
        await mesh.start()
    except RuntimeError as error:
        print(f"start-up failed: {error}", file=sys.stderr)
        await mesh.stop()
        return 1
    from meshcli.operator import Operator
    from meshcli.seed import credentials_path, seed_demo_data

    operator = Operator(data_dir, ports=mesh.ports)
    try:
        demo = await seed_demo_data(operator, say=lambda text: print(text, flush=True))
    except Exception as error:  # a half-seeded mesh still runs; the operator sees why
        print(f"seeding demo data failed: {error}", file=sys.stderr)
        demo = {"partners": {}}
    finally:
        await operator.close()
    partner_lines = "".join(
        f"  partner     {p['display_name']:<12} client_id {p['client_id']}\n" for p in demo["partners"].values()
    )
    print(
        "\n"
        + partner_lines
        + f"  credentials {credentials_path(data_dir)} (secrets of the demo partners and customers)\n"
        + f"  messages    {data_dir / CUSTOMER_NOTIFICATIONS_FILE} (what the bank sends customers: activation codes)\n"
        f"  gateway     127.0.0.1:{mesh.ports['gateway']}   (partners call this)\n"
        + "".join(
            f"  {n:<11} 127.0.0.1:{mesh.ports[n]}\n"
            for n in ("identity", "account", "payment", "settlement", "schemesim")
            if n in mesh.ports
        )
        + f"  bank web    http://127.0.0.1:{mesh.ports['bankweb']}/authorize   (customers authorise consents here)\n"
        + f"              http://127.0.0.1:{mesh.ports['bankweb']}/consents    (customers see and control them)\n"
        + f"  console     http://127.0.0.1:{mesh.ports['console']}/   (the bank's operators; sign-in in "
        f"{data_dir}/console-operators-credentials.json)\n"
        + "\n  next: openbank-mesh demo      (a wallet's whole journey, step by step)\n"
        f"  or:   buf curl --protocol grpc --http2-prior-knowledge --list-methods http://127.0.0.1:{mesh.ports['gateway']}\n"
        "  stop: Ctrl-C\n",
        flush=True,
    )
    exited = asyncio.ensure_future(mesh.wait_any_exit())
    stopping = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if exited in done:
        child = exited.result()
        print(f"{child.name} exited unexpectedly (code {child.process.returncode}); stopping the mesh", file=sys.stderr)
        await mesh.stop()
        return 1
    exited.cancel()
    print("stopping...", flush=True)
    codes = await mesh.stop()
    print("stopped" + ("" if all(c == 0 for c in codes) else f" (exit codes {codes})"), flush=True)
    return 0 if all(c == 0 for c in codes) else 1
