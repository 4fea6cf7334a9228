"""The gateway's limiter, its stream slots and the invalidation bus on a real Redis Cluster
(three masters, a replica each, started for this module with ``redis-server
--cluster-enabled yes``), including a master failing over while calls go on (issue 27).

With CI=true a missing redis-server fails, never skips."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator

import pytest

from gateway.ratelimit import Limit, RateLimiter, RedisBackend
from gateway.ratelimit.config import parse_config
from gateway.streams import RedisStreamSlots
from meshlib.errors import ResourceExhausted, Unavailable
from meshlib.events import Invalidation, RedisBus
from meshlib.redis_client import connect
from tests.support.redis_cluster import RedisCluster, redis_cluster
from tests.support.servers import ServerUnavailable

CONFIG = parse_config(
    {
        "tiers": {
            "default": {
                "reads": {"rate": 1, "per": "minute", "burst": 5},
                "payments": {"rate": 1, "per": "minute", "burst": 5},
            }
        },
        "classes": {"reads": {"on_backend_failure": "fail_open"}, "payments": {"on_backend_failure": "fail_closed"}},
    }
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    try:
        with redis_cluster(masters=3, replicas=1) as running:
            yield running
    except ServerUnavailable as missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(str(missing))
        pytest.skip(str(missing))


def _keys_on_every_master(count: int = 30) -> list[str]:
    return [f"k-{uuid.uuid4().hex}-{index}" for index in range(count)]


async def test_the_limiter_decides_exactly_across_the_clusters_masters(cluster: RedisCluster) -> None:
    prefix = f"rl-{uuid.uuid4().hex[:8]}:"
    backend = RedisBackend(cluster.url, prefix=prefix, clock=lambda: 10**15, lease_seconds=0)
    limit = Limit(rate=1, period_seconds=60, burst=3)
    keys = _keys_on_every_master()
    client = connect(cluster.url)
    try:
        await client.initialize()
        nodes = {client.get_node_from_key(prefix + key).name for key in keys}
        assert len(nodes) == 3  # the keys' slots are served by all three masters
        # Every key at once, four times: one pipeline split by node; each key admits its burst.
        decisions = await asyncio.gather(*(backend.decide(key, limit) for key in keys for _ in range(4)))
        admitted: dict[str, int] = {}
        for key, decision in zip([k for k in keys for _ in range(4)], decisions, strict=True):
            admitted[key] = admitted.get(key, 0) + decision.allowed
        assert set(admitted.values()) == {3}
    finally:
        await backend.close()
        await client.aclose()


async def test_keys_of_one_hash_slot_share_one_script_call_and_other_slots_get_their_own(cluster: RedisCluster) -> None:
    prefix = f"rl-{uuid.uuid4().hex[:8]}:"
    backend = RedisBackend(cluster.url, prefix=prefix, clock=lambda: 10**15, lease_seconds=0)
    limit = Limit(rate=1, period_seconds=60, burst=2)
    partner = uuid.uuid4().hex
    tagged = [f"{{partner-{partner}}}:{rate_class}" for rate_class in ("reads", "payments", "events")]
    spread = _keys_on_every_master(12)
    calls: list[int] = []
    pipelined = backend._pipelined

    async def counting(commands: list[object]) -> list[object]:
        calls.extend(int(command[2]) for command in commands)  # type: ignore[index]
        return await pipelined(commands)  # type: ignore[arg-type]

    backend._pipelined = counting  # type: ignore[method-assign]
    try:
        decisions = await asyncio.gather(*(backend.decide(key, limit) for key in tagged for _ in range(3)))
        assert [d.allowed for d in decisions] == [True, True, False] * 3
        assert calls == [3]  # one hash tag, one slot: one script call for the three keys
        calls.clear()
        await asyncio.gather(*(backend.decide(key, limit) for key in spread))
        assert sum(calls) == 12 and len(calls) == 12  # twelve slots: twelve calls, split by node
    finally:
        await backend.close()


async def test_two_gateways_share_one_limit_on_the_cluster(cluster: RedisCluster) -> None:
    prefix = f"rl-{uuid.uuid4().hex[:8]}:"
    gateways = [RateLimiter(lambda: CONFIG, RedisBackend(cluster.url, prefix=prefix)) for _ in range(2)]
    allowed = 0
    for index in range(8):
        try:
            await gateways[index % 2].check("p1", None, "reads")
            allowed += 1
        except ResourceExhausted:
            pass
    assert allowed == 5
    for limiter in gateways:
        await limiter._backend.close()  # type: ignore[attr-defined]


async def test_stream_slots_cap_a_partner_across_gateways_on_the_cluster(cluster: RedisCluster) -> None:
    prefix = f"st-{uuid.uuid4().hex[:8]}:"
    replicas = [RedisStreamSlots(cluster.url, prefix=prefix, lease_seconds=5) for _ in range(2)]
    try:
        taken = [await replicas[i % 2].acquire("partner-1", 3) for i in range(4)]
        assert [slot is not None for slot in taken] == [True, True, True, False]
        await replicas[0].renew_once()
        await replicas[1].renew_once()
    finally:
        for replica in replicas:
            await replica.close()


async def test_the_bus_reaches_every_subscriber_through_sharded_pub_sub(cluster: RedisCluster) -> None:
    channel = f"inv-{uuid.uuid4().hex[:8]}"
    buses = [RedisBus(cluster.url, channel) for _ in range(3)]
    received: list[list[Invalidation]] = [[] for _ in buses]
    for bus, box in zip(buses, received, strict=True):

        async def listen(event: Invalidation, box: list[Invalidation] = box) -> None:
            box.append(event)

        bus.subscribe(listen)
        await bus.start()
    try:
        await buses[0].publish(Invalidation("consent", "c1", "revoked"))
        deadline = time.monotonic() + 5
        while not all(received) and time.monotonic() < deadline:  # noqa: ASYNC110 - three listeners
            await asyncio.sleep(0.05)
        assert all(box == [Invalidation("consent", "c1", "revoked")] for box in received), received
    finally:
        for bus in buses:
            await bus.close()


async def test_a_master_failing_over_mid_load_follows_each_classs_policy_and_loses_no_revocation(
    cluster: RedisCluster,
) -> None:
    """Calls keep coming while the master of the limiter's key dies: fail-open calls are
    decided locally meanwhile, fail-closed ones are refused UNAVAILABLE, and once the replica
    took over both are decided in the cluster again; a revocation published after the
    failover reaches every subscriber (they reconnect to the shard's new master and resync)."""
    prefix, channel = f"fo-{uuid.uuid4().hex[:8]}:", f"inv-{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter(lambda: CONFIG, RedisBackend(cluster.url, prefix=prefix, timeout_seconds=0.25))
    resyncs: list[str] = []
    seen: list[Invalidation] = []
    bus = RedisBus(cluster.url, channel)

    async def remember(event: Invalidation) -> None:
        seen.append(event)

    async def resync() -> None:
        resyncs.append("resync")

    bus.subscribe(remember, resync)
    await bus.start()
    client = connect(cluster.url)
    try:
        await client.initialize()
        await limiter.check("p2", None, "payments")  # served by the cluster
        # The master holding this partner's payments bucket dies.
        victim_port = client.get_node_from_key(f"{prefix}payments:default:p2").port
        victim = next(node for node in cluster.nodes if node.port == victim_port)
        bus_on_victim = client.get_node_from_key(channel).port == victim_port
        victim.kill()
        outcomes: dict[str, list[str]] = {"reads": [], "payments": []}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for rate_class in ("reads", "payments"):
                try:
                    await limiter.check("p2", None, rate_class)
                    outcomes[rate_class].append("allowed")
                except Unavailable:
                    outcomes[rate_class].append("unavailable")
                except ResourceExhausted:
                    outcomes[rate_class].append("limited")
            payments = outcomes["payments"]
            if "unavailable" in payments and payments[-1] != "unavailable":
                break  # refused while the shard had no master, decided in the cluster again after
            await asyncio.sleep(0.2)
        payments = outcomes["payments"]
        assert "unavailable" in payments and payments[-1] != "unavailable", outcomes
        assert "unavailable" not in outcomes["reads"]  # fail open: decided locally, never refused for it
        await bus.publish(Invalidation("token", "t1", "revoked"))
        deadline = time.monotonic() + 15
        while Invalidation("token", "t1", "revoked") not in seen and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            await bus.publish(Invalidation("token", "t1", "revoked"))  # idempotent: a revocation again
        assert Invalidation("token", "t1", "revoked") in seen
        if bus_on_victim:  # its shard failed over: the caches were told to resync what they missed
            assert resyncs
    finally:
        await bus.close()
        await limiter._backend.close()  # type: ignore[attr-defined]
        await client.aclose()


async def test_a_gateway_runs_its_limiter_stream_caps_and_bus_on_the_cluster(cluster: RedisCluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The same settings as production, with a cluster URL: the gateway starts, limits a
    partner's calls in the cluster, and forwards the others."""
    import grpc

    from gateway.server import start_gateway
    from gateway.settings import GatewaySettings
    from meshlib.auth.testing import NeverRevoked, TestIssuer
    from meshlib.auth.verifier import static_jwks
    from meshlib.grpc_errors import decode_rpc_error
    from openbank.payment.v1 import payment_pb2, payment_pb2_grpc
    from tests.integration.gateway.test_gateway_routing import AuthorisedConsents
    from tests.integration.gateway.upstream import start_fake_upstream

    prefix = f"gw-{uuid.uuid4().hex[:8]}:"
    limits = tmp_path / "limits.yaml"
    limits.write_text(
        "default_tier: t\ntiers:\n  t:\n"
        + "".join(
            f"    {name}: {{rate: 1, per: minute, burst: {3 if name == 'reads' else 100}}}\n"
            for name in ("token", "consents", "reads", "payments", "streams", "settlement")
        )
    )
    issuer = TestIssuer(issuer="https://identity.openbank.local", audience="openbank-mesh")
    upstream_server, port, _ = await start_fake_upstream()
    target = f"127.0.0.1:{port}"
    gateway = await start_gateway(
        GatewaySettings(
            port=0,
            identity_target=target,
            account_target=target,
            payment_target=target,
            settlement_target=target,
            redis_url=cluster.url,
            ratelimit_key_prefix=prefix,
            ratelimit_config_file=limits,
        ),
        jwks_fetcher=static_jwks(issuer.jwks),
        consents=AuthorisedConsents(),
        revocation=NeverRevoked(),
    )
    token = issuer.token("wallet-a", scopes=["payments:read"], partner_id="wallet-a", consent_id="c1")
    outcomes = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = payment_pb2_grpc.PaymentServiceStub(channel)
            for _ in range(4):
                try:
                    await stub.GetPayment(
                        payment_pb2.GetPaymentRequest(name="payments/p-1"),
                        metadata=(("authorization", f"Bearer {token}"),),
                    )
                    outcomes.append("OK")
                except grpc.aio.AioRpcError as error:
                    outcomes.append(decode_rpc_error(error).reason)
    finally:
        await gateway.stop(0)
        await upstream_server.stop(0)
    assert outcomes[-1] == "RATE_LIMIT_EXCEEDED" and "RATE_LIMIT_EXCEEDED" not in outcomes[:3], outcomes
    # Decided in the cluster (not by the local fallback): the bucket's key is there.
    client = connect(cluster.url)
    try:
        await client.initialize()
        found = await client.keys(f"{prefix}*", target_nodes=client.get_primaries())
        assert found, "no rate-limit key in the cluster"
    finally:
        await client.aclose()


async def test_the_bank_pages_keep_their_sessions_on_the_cluster(cluster: RedisCluster) -> None:
    from bankweb.sessions import RedisSessionStore

    store = RedisSessionStore(cluster.url)
    session_id = uuid.uuid4().hex
    await store.save(session_id, {"customer": "alice"}, ttl_seconds=60)
    assert await store.load(session_id) == {"customer": "alice"}
    await store.delete(session_id)
    assert await store.load(session_id) is None
