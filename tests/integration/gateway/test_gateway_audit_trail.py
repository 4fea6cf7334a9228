"""The gateway's durable audit trail: every decision on a routed call (not health or reflection)
in this replica's hash-chained file, with who from the verified token; verified by the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from meshcli.audit import run_audit_command
from meshcli.main import build_parser
from openbank.account.v1 import account_pb2
from tests.integration.gateway.upstream import start_fake_upstream
from tests.integration.identity.harness import SECRETS, bearer, start_identity, stop_identity
from tests.support.ratelimits import generous_limits

LIMITS = generous_limits(unattended_reads_per_day=100, max_streams_per_partner=1)


@pytest.fixture
async def mesh(sqlite_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    identity = await start_identity(sqlite_url)
    upstream_server, upstream_port, _ = await start_fake_upstream()
    limits = tmp_path / "limits.yaml"
    limits.write_text(LIMITS)
    settings = GatewaySettings(
        port=0,
        identity_target=f"127.0.0.1:{identity.server.port}",
        account_target=f"127.0.0.1:{upstream_port}",
        payment_target=f"127.0.0.1:{upstream_port}",
        settlement_target=f"127.0.0.1:{upstream_port}",
        token_issuer=identity.settings.token_issuer,
        token_audience=identity.settings.token_audience,
        service_client_id="gateway",
        service_client_secret=SECRETS["gateway"],
        ratelimit_config_file=limits,
        audit_dir=tmp_path / "audit",
        audit_replica="gw-test",
        audit_flush_seconds=0.05,
    )
    gateway = await start_gateway(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
    try:
        yield identity, channel, gateway, tmp_path / "audit"
    finally:
        await channel.close()
        await gateway.stop(0)
        await upstream_server.stop(0)
        await stop_identity(identity)


async def cli(argv: list[str]) -> int:
    return await run_audit_command(build_parser().parse_args(argv))


def _records(directory: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl")) for line in path.read_text().splitlines()]


async def test_decisions_are_chained_durably_with_who_and_health_is_not_a_decision(mesh) -> None:  # type: ignore[no-untyped-def]
    identity, channel, gateway, directory = mesh
    partner = await identity.register_partner()
    tokens, consent_name = await identity.consent_bound_token(partner)
    # Raw bytes: the fake upstream's answer is not a GetBalanceResponse.
    balance = channel.unary_unary("/openbank.account.v1.AccountService/GetBalance")
    request = account_pb2.GetBalanceRequest(account="accounts/a1").SerializeToString()
    # Probes and discovery: successful calls, and no decision of the gateway.
    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    async for _ in reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])):
        pass
    await balance(request, metadata=bearer(tokens.access_token))
    with pytest.raises(grpc.aio.AioRpcError):
        await balance(request, metadata=bearer("garbage-token"))
    await gateway.audit_journal.flush()
    await asyncio.sleep(0)  # records are written on the loop's next turn after the answer
    await gateway.audit_journal.flush()

    records = _records(directory)
    assert [(r["resource"], r["details"]["decision"], r["outcome"]) for r in records] == [
        ("/openbank.account.v1.AccountService/GetBalance", "allowed", "OK"),
        ("/openbank.account.v1.AccountService/GetBalance", "denied", "UNAUTHENTICATED"),
    ]
    allowed, denied = records
    assert (allowed["actor"], allowed["actor_kind"], allowed["partner_id"]) == (
        partner.partner_id,
        "partner",
        partner.partner_id,
    )
    assert allowed["consent_id"] == consent_name.removeprefix("consents/") and allowed["client_id"] == partner.client_id
    assert allowed["interaction_id"] and denied["actor"] == "anonymous"
    assert denied["details"]["reason"] == "TOKEN_INVALID"
    assert tokens.access_token not in "".join(path.read_text() for path in directory.glob("*.jsonl"))
    assert [r["sequence"] for r in records] == [1, 2] and records[1]["previous_hash"] == records[0]["hash"]
    assert await cli(["audit", "verify", "--dir", str(directory)]) == 0


async def test_the_chain_resumes_after_a_restart(mesh, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, channel, gateway, directory = mesh
    with pytest.raises(grpc.aio.AioRpcError):
        await channel.unary_unary("/openbank.account.v1.LedgerService/CreateTransfer")(b"")
    await asyncio.sleep(0)
    await gateway.audit_journal.close()
    from meshlib.audit import AuditFileWriter

    again = AuditFileWriter(directory, "gw-test")
    await again.start()
    again.append({"action": "gateway.call", "resource": "/x.v1.S/M", "outcome": "OK", "actor": "anonymous"})
    await again.close()
    records = _records(directory)
    assert [r["sequence"] for r in records] == [1, 2]
    assert records[0]["details"]["decision"] == "unknown_method"
    assert await cli(["audit", "verify", "--dir", str(directory)]) == 0
