"""The scheme simulator in tests: in-process over real gRPC, or as its own process.

In-process (fast; a test may move the simulator's clock)::

    async with start_scheme(tmp_path, rules=RULES_YAML) as scheme:
        connector = scheme.connector(deadline_seconds=1.0)   # GrpcClearingConnector
        report = await connector.submit(transfer)
        await scheme.stub.GetCreditTransferStatus(request, metadata=scheme.metadata())

As a process (``python -m schemesim``, its own SQLite file; SIGKILL and restart)::

    process = SchemeProcess(tmp_path, rules=RULES_YAML)
    await process.start()            # serving on process.target; tokens from process.issuer
    process.kill(); await process.start()
    process.stop()

``rules`` is YAML text, a dict, or a path; None uses the shipped ``schemesim/rules.yaml``.
Tokens come from a :class:`~meshlib.auth.testing.TestIssuer` whose keys the simulator trusts
(in-process: its JWKS fetcher; as a process: ``OBM_SCHEME_JWKS_FILE``), so no identity runs.
A payment service under test that calls the simulator needs the scopes ``scheme:write`` and
``scheme:read`` in a token that the simulator can check: in-process, pass the mesh's
``TestIssuer`` (``issuer=``); as a process, its JWKS file (``jwks_file=``) or identity's address
(``identity_target=``: the simulator then fetches identity's keys, as in ``make up``).
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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshlib.app import RunningService, start_service
from meshlib.auth.testing import TestIssuer
from meshlib.auth.verifier import static_jwks
from meshlib.clients import PeerCaller
from openbank.scheme.v1 import scheme_pb2_grpc
from schemesim.bootstrap import SchemeComponents, scheme_spec
from schemesim.clearing import utc_now
from schemesim.settings import SchemeSettings
from services.payment.adapters.clearing import CLEARING_SCOPES, GrpcClearingConnector
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[2]
Rules = str | dict[str, Any] | Path | None


def rules_file(directory: Path, rules: Rules) -> Path | None:
    """``rules`` as a file in ``directory`` (None: the shipped default)."""
    if rules is None or isinstance(rules, Path):
        return rules
    path = directory / "scheme-rules.yaml"
    path.write_text(rules if isinstance(rules, str) else yaml.safe_dump(rules))
    return path


def auth_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying a bearer token."""
    return (("authorization", f"Bearer {token}"),)


@dataclass
class SchemeClient:
    """What a test needs to call a running simulator: its address, tokens, a stub."""

    target: str
    issuer: TestIssuer
    channel: grpc.aio.Channel

    def __post_init__(self) -> None:
        self.stub = scheme_pb2_grpc.ClearingServiceStub(self.channel)

    def token(self, scopes: tuple[str, ...] = CLEARING_SCOPES, subject: str = "service:payment") -> str:
        """An access token the simulator accepts."""
        return self.issuer.token(subject, scopes=list(scopes))

    def metadata(self, scopes: tuple[str, ...] = CLEARING_SCOPES) -> tuple[tuple[str, str], ...]:
        """Call metadata with a token of ``scopes``."""
        return auth_metadata(self.token(scopes))

    def connector(self, *, deadline_seconds: float = 2.0, attempts: int = 3) -> GrpcClearingConnector:
        """The payment service's clearing connector, pointed at this simulator."""

        async def bearer() -> str:
            return self.token()

        return GrpcClearingConnector(
            self.channel, PeerCaller(bearer, deadline_seconds=deadline_seconds, attempts=attempts)
        )


@dataclass
class RunningScheme(SchemeClient):
    """An in-process simulator and a client of it."""

    server: RunningService[SchemeComponents] | None = None


@contextlib.asynccontextmanager
async def start_scheme(
    directory: Path,
    *,
    rules: Rules = None,
    database_url: str | None = None,
    clock: Callable[[], dt.datetime] = utc_now,
    issuer: TestIssuer | None = None,
    returns_interval_seconds: float = 0.2,
) -> AsyncIterator[RunningScheme]:
    """Run the simulator in this process on port 0 (SQLite in ``directory`` unless a URL is given)."""
    issuer = issuer or TestIssuer()
    overrides: dict[str, Any] = {
        "port": 0,
        "database_url": database_url or f"sqlite+aiosqlite:///{directory / 'schemesim.db'}",
        "token_issuer": issuer.issuer,
        "token_audience": issuer.audience,
        "scheme_returns_interval_seconds": returns_interval_seconds,
    }
    path = rules_file(directory, rules)
    if path is not None:
        overrides["scheme_rules_file"] = path
    server = await start_service(
        scheme_spec(clock=clock), SchemeSettings(**overrides), jwks_fetcher=static_jwks(issuer.jwks)
    )
    target = f"127.0.0.1:{server.port}"
    channel = grpc.aio.insecure_channel(target)
    try:
        yield RunningScheme(target=target, issuer=issuer, channel=channel, server=server)
    finally:
        await channel.close()
        await server.stop()


async def wait_serving(target: str, process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Until ``target`` answers its gRPC health check SERVING (fails if the process exits)."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"schemesim exited with code {process.returncode} before serving")
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"schemesim not serving on {target} after {timeout}s")
            await asyncio.sleep(0.1)


@dataclass
class SchemeProcess:
    """``python -m schemesim`` as a subprocess with its own SQLite file in ``directory``."""

    directory: Path
    rules: Rules = None
    issuer: TestIssuer = field(default_factory=TestIssuer)
    jwks_file: Path | None = None  # default: the issuer's key set, written next to the data
    # Trust identity's keys instead (a mesh under test): the simulator fetches its JWKS from
    # there and takes the issuer and audience of OBM_TOKEN_ISSUER / _AUDIENCE (or their defaults).
    identity_target: str | None = None
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def target(self) -> str:
        """host:port of the simulator."""
        return f"127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """The process's OBM_* environment."""
        env = dict(os.environ)
        env.update(
            {
                "OBM_PORT": str(self.port),
                "OBM_HOST": "127.0.0.1",
                "OBM_DATABASE_URL": f"sqlite+aiosqlite:///{self.directory / 'schemesim.db'}",
                "OBM_SCHEME_RETURNS_INTERVAL_SECONDS": "0.2",
                "OBM_LOG_LEVEL": "INFO",
                "OBM_LOG_FORMAT": "json",
            }
        )
        if self.identity_target is not None:
            env["OBM_IDENTITY_TARGET"] = self.identity_target
            env.pop("OBM_SCHEME_JWKS_FILE", None)
        else:
            jwks = self.jwks_file
            if jwks is None:
                jwks = self.directory / "scheme-jwks.json"
                jwks.write_text(json.dumps(self.issuer.jwks))
            env["OBM_SCHEME_JWKS_FILE"] = str(jwks)
            env["OBM_TOKEN_ISSUER"] = self.issuer.issuer
            env["OBM_TOKEN_AUDIENCE"] = self.issuer.audience
        path = rules_file(self.directory, self.rules)
        if path is not None:
            env["OBM_SCHEME_RULES_FILE"] = str(path)
        env.update(self.extra_env)
        return env

    def spawn(self) -> subprocess.Popen[bytes]:
        """Launch it; output goes to ``schemesim-<n>.log`` in the directory."""
        self.starts += 1
        with open(self.log_path(self.starts), "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "schemesim"],
                cwd=REPO,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self.process

    def log_path(self, start: int) -> Path:
        """The output of the ``start``-th run."""
        return self.directory / f"schemesim-{start}.log"

    async def start(self) -> None:
        """Launch and wait until it serves."""
        await wait_serving(self.target, self.spawn())

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[SchemeClient]:
        """A client of the running process."""
        async with grpc.aio.insecure_channel(self.target) as channel:
            yield SchemeClient(target=self.target, issuer=self.issuer, channel=channel)
