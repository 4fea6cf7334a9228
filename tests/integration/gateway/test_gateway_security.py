"""The gateway against the real identity service over real gRPC: tokens, scopes, consents,
revocation and suspension within a second, hidden internal rpcs, streaming, deadlines,
rate limits with their details, and the audit log."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2

from gateway.server import start_gateway
from gateway.settings import GatewaySettings
from meshlib.grpc_errors import decode_status, error_info
from meshlib.server import INTERACTION_ID_HEADER
from openbank.account.v1 import account_pb2, account_pb2_grpc, ledger_pb2, ledger_pb2_grpc
from openbank.common.v1 import consent_permission_pb2
from openbank.identity.v1 import consent_pb2, partner_pb2, token_pb2
from openbank.payment.v1 import payment_pb2, payment_pb2_grpc
from tests.integration.gateway.upstream import WATCH, start_fake_upstream
from tests.integration.identity.harness import (
    SECRETS,
    bearer,
    pkce_pair,
    request_id,
    start_identity,
    stop_identity,
)
from tests.support.ratelimits import generous_limits

GET_BALANCE = "/openbank.account.v1.AccountService/GetBalance"

GENEROUS = generous_limits(unattended_reads_per_day=2, max_streams_per_partner=1)
TIGHT_READS = GENEROUS.replace(
    "reads: {rate: 1000, per: second, burst: 1000}", "reads: {rate: 1, per: minute, burst: 3}"
)


@pytest.fixture
async def mesh(request, sqlite_url: str, redis_url: str, key_prefix: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    channel_name = f"{key_prefix}invalidations"
    identity = await start_identity(sqlite_url, redis_url=redis_url, invalidation_channel=channel_name)
    upstream_server, upstream_port, upstream = await start_fake_upstream()
    limits = tmp_path / "limits.yaml"
    limits.write_text(getattr(request, "param", GENEROUS))
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
        redis_url=redis_url,
        ratelimit_config_file=limits,
        ratelimit_key_prefix=f"{key_prefix}rl:",
        invalidation_channel=channel_name,
    )
    gateway = await start_gateway(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}")
    try:
        yield identity, channel, upstream
    finally:
        await channel.close()
        await gateway.stop(0)
        await upstream_server.stop(0)
        await stop_identity(identity)


def _reason(error: grpc.aio.AioRpcError) -> str:
    info = error_info(decode_status(error.trailing_metadata()))
    return info.reason if info else ""


async def _balance(channel: grpc.aio.Channel, token: str, *, present: bool = True) -> grpc.aio.UnaryUnaryCall:
    metadata = bearer(token) + ((("x-fapi-customer-ip-address", "198.51.100.7"),) if present else ())
    return account_pb2_grpc.AccountServiceStub(channel).GetBalance(
        account_pb2.GetBalanceRequest(account="accounts/a1"), metadata=metadata, timeout=5
    )


async def test_allowed_call_reaches_the_upstream_with_the_token_and_headers(mesh) -> None:  # type: ignore[no-untyped-def]
    identity, channel, upstream = mesh
    partner = await identity.register_partner()
    tokens, _ = await identity.consent_bound_token(partner)
    call = await _balance(channel, tokens.access_token)
    await call
    initial = dict(await call.initial_metadata())
    assert initial["ratelimit-limit"] == "1000" and initial["ratelimit-remaining"] == "999"
    assert INTERACTION_ID_HEADER in initial
    (seen,) = upstream.calls
    assert seen.method == GET_BALANCE
    assert seen.metadata["authorization"] == f"Bearer {tokens.access_token}"  # each service checks again
    assert seen.metadata[INTERACTION_ID_HEADER] == initial[INTERACTION_ID_HEADER]


async def test_each_call_keeps_its_own_interaction_id_and_token(mesh) -> None:  # type: ignore[no-untyped-def]
    # The gateway builds each method's interceptor chain once: per-call values must still
    # come from each call, never from the call that built the chain.
    identity, channel, upstream = mesh
    stub = account_pb2_grpc.AccountServiceStub(channel)
    sent = []
    for number in range(3):
        partner = await identity.register_partner()
        tokens, _ = await identity.consent_bound_token(partner)
        interaction_id = f"call-{number}-of-three"
        call = stub.GetBalance(
            account_pb2.GetBalanceRequest(account="accounts/a1"),
            metadata=(*bearer(tokens.access_token), (INTERACTION_ID_HEADER, interaction_id)),
            timeout=5,
        )
        await call
        assert dict(await call.initial_metadata())[INTERACTION_ID_HEADER] == interaction_id
        sent.append((interaction_id, f"Bearer {tokens.access_token}"))
    seen = [(call.metadata[INTERACTION_ID_HEADER], call.metadata["authorization"]) for call in upstream.calls]
    assert seen == sent


async def test_missing_scope_and_missing_consent_are_refused_before_routing(mesh) -> None:  # type: ignore[no-untyped-def]
    identity, channel, upstream = mesh
    partner = await identity.register_partner()
    no_read_scope = await identity.client_token(partner, ("consents:read",))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await await_call(_balance(channel, no_read_scope))
    assert (raised.value.code(), _reason(raised.value)) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")
    no_consent = await identity.client_token(partner, ("accounts:read",))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await await_call(_balance(channel, no_consent))
    assert (raised.value.code(), _reason(raised.value)) == (grpc.StatusCode.PERMISSION_DENIED, "CONSENT_REQUIRED")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await await_call(_balance(channel, "not-a-token"))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert upstream.calls == []


async def test_a_consent_without_the_rpcs_permission_is_refused_before_routing(mesh) -> None:  # type: ignore[no-untyped-def]
    # GetBalance needs READ_BALANCES; this consent grants READ_ACCOUNTS only.
    identity, channel, upstream = mesh
    partner = await identity.register_partner()
    verifier, challenge = pkce_pair()
    consent = await identity.create_consent(
        partner, challenge, permissions=(consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS,)
    )
    authorised = await identity.authorise(consent.name, await identity.create_customer())
    tokens = await identity.exchange(partner, authorised.authorization_code, verifier)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await await_call(_balance(channel, tokens.access_token))
    assert (raised.value.code(), _reason(raised.value)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "CONSENT_PERMISSION_MISSING",
    )
    assert upstream.calls == []


async def test_a_stream_without_its_scope_is_refused_before_routing(mesh) -> None:  # type: ignore[no-untyped-def]
    identity, channel, upstream = mesh
    partner = await identity.register_partner()
    no_read_scope = await identity.client_token(partner, ("consents:read",))  # no payments:read
    stream = payment_pb2_grpc.PaymentServiceStub(channel).WatchPayments(
        payment_pb2.WatchPaymentsRequest(), metadata=bearer(no_read_scope)
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stream.read()
    assert (raised.value.code(), _reason(raised.value)) == (grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE")
    assert upstream.calls == []


async def await_call(call):  # type: ignore[no-untyped-def]
    return await (await call)


async def _refused_within(channel: grpc.aio.Channel, token: str, seconds: float) -> tuple[float, str]:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            await await_call(_balance(channel, token))
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                return time.monotonic() - started, _reason(error)
            raise
        await asyncio.sleep(0.05)
    raise AssertionError(f"still served {seconds}s after the change")


async def test_revoked_consent_is_refused_within_a_second(mesh) -> None:  # type: ignore[no-untyped-def]
    identity, channel, _ = mesh
    partner = await identity.register_partner()
    tokens, consent_name = await identity.consent_bound_token(partner)
    await await_call(_balance(channel, tokens.access_token))  # warm every cache
    await identity.consents.RevokeConsent(
        consent_pb2.RevokeConsentRequest(request_id=request_id(), name=consent_name),
        metadata=bearer(await identity.client_token(partner)),
    )
    elapsed, reason = await _refused_within(channel, tokens.access_token, 1.0)
    assert reason == "CONSENT_REVOKED"
    assert elapsed < 1.0


async def test_suspended_partner_is_refused_within_a_second(mesh) -> None:  # type: ignore[no-untyped-def]
    identity, channel, _ = mesh
    partner = await identity.register_partner()
    tokens, _ = await identity.consent_bound_token(partner)
    await await_call(_balance(channel, tokens.access_token))
    await identity.partners.SuspendPartner(
        partner_pb2.SuspendPartnerRequest(request_id=request_id(), name=partner.name), metadata=await identity.admin()
    )
    elapsed, reason = await _refused_within(channel, tokens.access_token, 1.0)
    assert reason == "PARTNER_SUSPENDED"
    assert elapsed < 1.0


async def test_internal_and_unknown_methods_do_not_exist(mesh) -> None:  # type: ignore[no-untyped-def]
    identity, channel, upstream = mesh
    admin_token = await identity.service_token("ops-admin")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await ledger_pb2_grpc.LedgerServiceStub(channel).GetTransfer(
            ledger_pb2.GetTransferRequest(name="transfers/t1"), metadata=bearer(admin_token)
        )
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary("/openbank.account.v1.AccountService/DropAllTables")(b"")
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert upstream.calls == []


async def test_streams_are_proxied_and_capped_per_partner(mesh) -> None:  # type: ignore[no-untyped-def]
    identity, channel, upstream = mesh
    partner = await identity.register_partner()
    token = await identity.client_token(partner, ("payments:read",))
    first = channel.unary_stream(WATCH)(payment_pb2.WatchPaymentsRequest().SerializeToString(), metadata=bearer(token))
    assert [await first.read() for _ in range(3)] == [b"\x00", b"\x01", b"\x02"]
    assert upstream.calls[-1].method == WATCH
    # A second concurrent stream of the same partner is over the cap of one.
    second = payment_pb2_grpc.PaymentServiceStub(channel).WatchPayments(
        payment_pb2.WatchPaymentsRequest(), metadata=bearer(token)
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in second:
            pass
    assert (raised.value.code(), _reason(raised.value)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "TOO_MANY_STREAMS")
    first.cancel()


async def test_the_partners_deadline_travels_to_the_upstream(mesh) -> None:  # type: ignore[no-untyped-def]
    identity, channel, upstream = mesh
    partner = await identity.register_partner()
    tokens, _ = await identity.consent_bound_token(partner)
    await account_pb2_grpc.AccountServiceStub(channel).GetBalance(
        account_pb2.GetBalanceRequest(account="accounts/a1"), metadata=bearer(tokens.access_token), timeout=1.5
    )
    remaining = upstream.calls[-1].time_remaining
    assert remaining is not None and 0.5 < remaining <= 1.5


async def test_a_deadline_beyond_the_cap_is_refused_not_shortened(mesh) -> None:  # type: ignore[no-untyped-def]
    identity, channel, upstream = mesh
    partner = await identity.register_partner()
    tokens, _ = await identity.consent_bound_token(partner)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await account_pb2_grpc.AccountServiceStub(channel).GetBalance(
            account_pb2.GetBalanceRequest(account="accounts/a1"), metadata=bearer(tokens.access_token), timeout=3600
        )
    assert (raised.value.code(), _reason(raised.value)) == (grpc.StatusCode.INVALID_ARGUMENT, "DEADLINE_TOO_LONG")
    info = error_info(decode_status(raised.value.trailing_metadata()))
    assert info.metadata["max_deadline_ms"] == "30000"
    assert upstream.calls == []


@pytest.mark.parametrize("mesh", [TIGHT_READS], indirect=True)
async def test_rate_limit_answers_resource_exhausted_with_details_and_headers(mesh) -> None:  # type: ignore[no-untyped-def]
    identity, channel, upstream = mesh
    partner = await identity.register_partner()
    tokens, _ = await identity.consent_bound_token(partner)
    for _ in range(3):
        await await_call(_balance(channel, tokens.access_token))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await await_call(_balance(channel, tokens.access_token))
    error = raised.value
    assert (error.code(), _reason(error)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMIT_EXCEEDED")
    status = decode_status(error.trailing_metadata())
    kinds = {d.TypeName() for d in status.details}
    assert {"google.rpc.QuotaFailure", "google.rpc.RetryInfo", "google.rpc.ErrorInfo"} <= kinds
    retry = error_details_pb2.RetryInfo()
    next(d for d in status.details if d.Is(retry.DESCRIPTOR)).Unpack(retry)
    assert 50 < retry.retry_delay.seconds <= 60  # one per minute after a burst of three
    trailers = dict(error.trailing_metadata())
    assert trailers["ratelimit-remaining"] == "0" and int(trailers["ratelimit-reset"]) > 0
    assert len(upstream.calls) == 3


async def test_unattended_reads_are_limited_per_consent_per_day(mesh) -> None:  # type: ignore[no-untyped-def]
    identity, channel, _ = mesh
    partner = await identity.register_partner()
    tokens, _ = await identity.consent_bound_token(partner)
    for _ in range(2):
        await await_call(_balance(channel, tokens.access_token, present=False))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await await_call(_balance(channel, tokens.access_token, present=False))
    assert _reason(raised.value) == "CONSENT_READS_EXHAUSTED"
    await await_call(_balance(channel, tokens.access_token, present=True))  # the customer is present


async def test_every_call_is_audited_without_the_token(mesh, caplog) -> None:  # type: ignore[no-untyped-def]
    identity, channel, _ = mesh
    partner = await identity.register_partner()
    tokens, consent_name = await identity.consent_bound_token(partner)
    caplog.set_level(logging.INFO, logger="openbank.audit")
    await await_call(_balance(channel, tokens.access_token))
    with pytest.raises(grpc.aio.AioRpcError):
        await await_call(_balance(channel, "garbage-token"))
    with pytest.raises(grpc.aio.AioRpcError):
        await channel.unary_unary("/openbank.account.v1.LedgerService/CreateTransfer")(b"")
    for _ in range(200):  # a record is written on the gateway loop's next turn, after the answer
        records = [r for r in caplog.records if r.name == "openbank.audit"]
        if len(records) >= 3:
            break
        await asyncio.sleep(0.005)
    assert [(r.decision, r.status) for r in records] == [
        ("allowed", "OK"),
        ("denied", "UNAUTHENTICATED"),
        ("unknown_method", "UNIMPLEMENTED"),
    ]
    assert records[0].partner == partner.partner_id and records[0].consent == consent_name.split("/")[1]
    assert records[1].reason == "TOKEN_INVALID"
    assert all(r.latency_ms >= 0 for r in records)
    text = caplog.text + " ".join(str(r.__dict__) for r in records)
    assert tokens.access_token not in text and "garbage-token" not in text


def test_issue_token_request_type_is_public() -> None:
    assert token_pb2.IssueTokenRequest.DESCRIPTOR.full_name == "openbank.identity.v1.IssueTokenRequest"
