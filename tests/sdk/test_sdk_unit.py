"""The SDK's client-side behaviour against fake in-process servers (no mesh): one idempotency
key across retries, retries on UNAVAILABLE only, rich error decoding, token caching, watch
resume after a disconnect, PKCE and TOTP test vectors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import openbank_sdk as ob
import pytest
import pytest_asyncio
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from openbank_sdk.sandbox import totp_code

from openbank.identity.v1 import token_pb2, token_pb2_grpc
from openbank.payment.v1 import payment_pb2, payment_pb2_grpc

FAST_RETRY = ob.RetryPolicy(max_attempts=4, initial_backoff=0.001, max_backoff=0.01)


def _status_details(code: grpc.StatusCode, message: str, *details: Any) -> tuple[tuple[str, bytes], ...]:
    status = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return (("grpc-status-details-bin", status.SerializeToString()),)


class FakeTokens(token_pb2_grpc.TokenServiceServicer):
    """Issues numbered tokens; counts the grants it saw."""

    def __init__(self) -> None:
        self.grants: list[int] = []
        self.expires_in = 300

    async def IssueToken(self, request, context):  # type: ignore[no-untyped-def]
        self.grants.append(request.grant_type)
        return token_pb2.IssueTokenResponse(
            access_token=f"token-{len(self.grants)}",
            token_type="Bearer",
            expires_in=self.expires_in,
            refresh_token=f"refresh-{len(self.grants)}" if request.grant_type != 1 else "",
            consent="consents/c1" if request.grant_type != 1 else "",
        )


class FakePayments(payment_pb2_grpc.PaymentServiceServicer):
    """Scripted failures: ``failures`` is a list of status codes to answer before succeeding."""

    def __init__(self) -> None:
        self.failures: list[grpc.StatusCode] = []
        self.request_ids: list[str] = []
        self.get_calls = 0
        self.watch_cursors: list[str] = []
        self.watch_tokens: list[str] = []
        self.tokens_seen: list[str] = []
        # How the first stream ends after its two events (the gateway's answer when it ends it).
        self.first_watch_ends: tuple[grpc.StatusCode, str] = (grpc.StatusCode.UNAVAILABLE, "SERVICE_UNAVAILABLE")

    async def _maybe_fail(self, context: grpc.aio.ServicerContext) -> None:
        if self.failures:
            code = self.failures.pop(0)
            await context.abort(
                code,
                "scripted",
                _status_details(
                    code,
                    "scripted",
                    error_details_pb2.ErrorInfo(
                        reason="SERVICE_UNAVAILABLE" if code == grpc.StatusCode.UNAVAILABLE else "INTERNAL_ERROR",
                        domain="payment.test",
                    ),
                ),
            )

    async def CreatePayment(self, request, context):  # type: ignore[no-untyped-def]
        self.request_ids.append(request.request_id)
        self.tokens_seen.append(dict(context.invocation_metadata()).get("authorization", ""))
        await self._maybe_fail(context)
        return payment_pb2.CreatePaymentResponse(
            payment=payment_pb2.Payment(name="payments/p1", state=payment_pb2.PAYMENT_STATE_SETTLED)
        )

    async def GetPayment(self, request, context):  # type: ignore[no-untyped-def]
        self.get_calls += 1
        self.tokens_seen.append(dict(context.invocation_metadata()).get("authorization", ""))
        if request.name == "payments/expired-once" and self.get_calls == 1:
            info = error_details_pb2.ErrorInfo(reason="TOKEN_EXPIRED", domain="gateway.test")
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED, "expired", _status_details(grpc.StatusCode.UNAUTHENTICATED, "x", info)
            )
        if request.name == "payments/limited":
            details = _status_details(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "slow down",
                error_details_pb2.ErrorInfo(reason="RATE_LIMIT_EXCEEDED", domain="gateway.test", metadata={"k": "v"}),
                error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000)),
                error_details_pb2.QuotaFailure(
                    violations=[error_details_pb2.QuotaFailure.Violation(subject="partner:x", description="1/s")]
                ),
            )
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", (*details, ("ratelimit-remaining", "0"))
            )
        await self._maybe_fail(context)
        return payment_pb2.GetPaymentResponse(payment=payment_pb2.Payment(name=request.name))

    async def ListPayments(self, request, context):  # type: ignore[no-untyped-def]
        start = int(request.page_token or 0)
        size = request.page_size or 50
        names = [f"payments/p{i}" for i in range(start, min(start + size, 5))]
        following = start + size
        return payment_pb2.ListPaymentsResponse(
            payments=[payment_pb2.Payment(name=n) for n in names],
            next_page_token=str(following) if following < 5 else "",
        )

    async def WatchPayments(self, request, context) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
        self.watch_cursors.append(request.after_cursor)
        self.watch_tokens.append(dict(context.invocation_metadata()).get("authorization", ""))
        start = int(request.after_cursor or 0)
        for number in range(start + 1, start + 3):
            yield payment_pb2.WatchPaymentsResponse(
                event=payment_pb2.PaymentEvent(cursor=str(number), payment=f"payments/p{number}")
            )
        if len(self.watch_cursors) == 1:
            code, reason = self.first_watch_ends
            info = error_details_pb2.ErrorInfo(reason=reason, domain="gateway.test")
            await context.abort(code, "stream ended", _status_details(code, "stream ended", info))
        await asyncio.sleep(30)  # the second stream stays open


@pytest_asyncio.fixture
async def fakes() -> AsyncIterator[tuple[FakeTokens, FakePayments, int]]:
    tokens, payments = FakeTokens(), FakePayments()
    server = grpc.aio.server()
    token_pb2_grpc.add_TokenServiceServicer_to_server(tokens, server)
    payment_pb2_grpc.add_PaymentServiceServicer_to_server(payments, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield tokens, payments, port
    await server.stop(0)


async def _session(port: int, **options: Any) -> tuple[ob.OpenBankClient, ob.ConsentSession]:
    client = ob.OpenBankClient(ob.insecure_channel(f"127.0.0.1:{port}"), "client-1", "secret", **options)
    session = await client.exchange_code("code", "v" * 43)
    return client, session


async def test_a_retried_create_payment_carries_the_same_generated_request_id(fakes) -> None:  # type: ignore[no-untyped-def]
    _, payments, port = fakes
    payments.failures = [grpc.StatusCode.UNAVAILABLE]
    client, session = await _session(port, retry=FAST_RETRY)
    try:
        payment = await session.create_payment("accounts/a1", ob.money(100, "EUR"), creditor_wallet="partners/p1")
        assert payment.name == "payments/p1"
        assert len(payments.request_ids) == 2
        assert payments.request_ids[0] == payments.request_ids[1] != ""
        # A new call gets a new key.
        await session.create_payment("accounts/a1", ob.money(100, "EUR"), creditor_wallet="partners/p1")
        assert payments.request_ids[2] != payments.request_ids[0]
        # An explicit key is kept as given.
        await session.create_payment("accounts/a1", ob.money(1, "EUR"), creditor_wallet="partners/p1", request_id="k-1")
        assert payments.request_ids[3] == "k-1"
    finally:
        await client.close()


async def test_only_unavailable_is_retried_and_attempts_are_bounded(fakes) -> None:  # type: ignore[no-untyped-def]
    _, payments, port = fakes
    client, session = await _session(port, retry=FAST_RETRY)
    try:
        payments.failures = [grpc.StatusCode.INTERNAL]
        with pytest.raises(ob.Internal):
            await session.get_payment("payments/p1")
        assert payments.get_calls == 1
        payments.failures = [grpc.StatusCode.NOT_FOUND]
        with pytest.raises(ob.NotFound):
            await session.get_payment("payments/p1")
        assert payments.get_calls == 2
        payments.failures = [grpc.StatusCode.UNAVAILABLE] * 10
        with pytest.raises(ob.Unavailable) as caught:
            await session.get_payment("payments/p1")
        assert payments.get_calls == 2 + FAST_RETRY.max_attempts
        assert caught.value.reason == "SERVICE_UNAVAILABLE" and caught.value.retryable
        payments.failures = [grpc.StatusCode.UNAVAILABLE] * 2
        assert (await session.get_payment("payments/p1")).name == "payments/p1"
    finally:
        await client.close()


async def test_rich_error_details_become_a_typed_exception(fakes) -> None:  # type: ignore[no-untyped-def]
    _, payments, port = fakes
    client, session = await _session(port, retry=FAST_RETRY)
    try:
        with pytest.raises(ob.RateLimited) as caught:
            await session.get_payment("payments/limited")
        error = caught.value
        assert payments.get_calls == 1  # RESOURCE_EXHAUSTED is the caller's decision, not retried
        assert (error.code, error.reason, error.domain) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "RATE_LIMIT_EXCEEDED",
            "gateway.test",
        )
        assert error.metadata == {"k": "v"}
        assert error.retry_after == pytest.approx(2.5)
        assert error.quota_violations == (ob.QuotaViolation("partner:x", "1/s"),)
        assert error.trailers["ratelimit-remaining"] == "0"
        assert isinstance(error, ob.OpenBankError) and not error.retryable
    finally:
        await client.close()


async def test_pagination_walks_every_page(fakes) -> None:  # type: ignore[no-untyped-def]
    _, _, port = fakes
    client, session = await _session(port)
    try:
        names = [p.name async for p in session.list_payments(page_size=2)]
        assert names == [f"payments/p{i}" for i in range(5)]
        assert len(await ob.collect(session.list_payments(page_size=2), limit=3)) == 3
    finally:
        await client.close()


async def test_tokens_are_cached_and_renewed_before_they_expire(fakes) -> None:  # type: ignore[no-untyped-def]
    tokens, _, port = fakes
    now = [1000.0]
    source = ob.ClientCredentialsTokens(
        ob.insecure_channel(f"127.0.0.1:{port}"),
        ob.ClientCredentials("client-1", "secret"),
        ["payments:read"],
        refresh_margin=30,
        clock=lambda: now[0],
    )
    first = await source.token()
    assert await source.token() == first and len(tokens.grants) == 1
    now[0] += 300 - 31  # still outside the margin
    assert await source.token() == first
    now[0] += 2  # inside the margin: renewed before the server would refuse it
    assert await source.token() != first and len(tokens.grants) == 2
    # Concurrent callers share one renewal.
    now[0] += 1000
    await asyncio.gather(*(source.token() for _ in range(10)))
    assert len(tokens.grants) == 3


async def test_consent_tokens_rotate_the_refresh_token(fakes) -> None:  # type: ignore[no-untyped-def]
    tokens, _, port = fakes
    client, session = await _session(port)
    try:
        before = session.tokens.current
        assert before is not None and before.refresh_token == "refresh-1" and session.consent == "consents/c1"
        after = await session.tokens.refresh()
        assert after.refresh_token == "refresh-2" and after.access_token != before.access_token
        assert tokens.grants == [token_pb2.GRANT_TYPE_AUTHORIZATION_CODE, token_pb2.GRANT_TYPE_REFRESH_TOKEN]
        assert "refresh" not in repr(after) and "token-" not in repr(after)
    finally:
        await client.close()


async def test_an_expired_token_is_renewed_and_the_call_sent_once_more(fakes) -> None:  # type: ignore[no-untyped-def]
    tokens, payments, port = fakes
    client, session = await _session(port, retry=FAST_RETRY)
    try:
        assert (await session.get_payment("payments/expired-once")).name == "payments/expired-once"
        assert payments.get_calls == 2
        assert payments.tokens_seen == ["Bearer token-1", "Bearer token-2"]
        assert tokens.grants[-1] == token_pb2.GRANT_TYPE_REFRESH_TOKEN
    finally:
        await client.close()


async def test_watch_payments_resumes_from_the_last_cursor_after_a_disconnect(fakes) -> None:  # type: ignore[no-untyped-def]
    _, payments, port = fakes
    client = ob.OpenBankClient(ob.insecure_channel(f"127.0.0.1:{port}"), "client-1", "secret", retry=FAST_RETRY)
    try:
        seen: list[str] = []
        stream = client.watch_payments()
        async for event in stream:
            seen.append(event.cursor)
            if len(seen) == 4:
                break
        await stream.aclose()
        assert seen == ["1", "2", "3", "4"]  # nothing lost, nothing repeated
        assert payments.watch_cursors == ["", "2"]
    finally:
        await client.close()


async def test_watch_payments_resumes_with_a_fresh_token_when_the_stream_ends_at_token_expiry(fakes) -> None:  # type: ignore[no-untyped-def]
    # The mesh ends a stream when its token expires (UNAUTHENTICATED TOKEN_EXPIRED): the SDK
    # renews the token and resumes after the last event it yielded.
    tokens, payments, port = fakes
    payments.first_watch_ends = (grpc.StatusCode.UNAUTHENTICATED, "TOKEN_EXPIRED")
    client = ob.OpenBankClient(ob.insecure_channel(f"127.0.0.1:{port}"), "client-1", "secret", retry=FAST_RETRY)
    try:
        seen: list[str] = []
        stream = client.watch_payments()
        async for event in stream:
            seen.append(event.cursor)
            if len(seen) == 4:
                break
        await stream.aclose()
        assert seen == ["1", "2", "3", "4"]
        assert payments.watch_cursors == ["", "2"]
        assert payments.watch_tokens == ["Bearer token-1", "Bearer token-2"]
        assert len(tokens.grants) == 2
    finally:
        await client.close()


async def test_watch_payments_stops_on_a_revocation(fakes) -> None:  # type: ignore[no-untyped-def]
    # A revoked token or consent, a suspended partner: resuming cannot help, the error surfaces.
    _, payments, port = fakes
    payments.first_watch_ends = (grpc.StatusCode.PERMISSION_DENIED, "CONSENT_REVOKED")
    client = ob.OpenBankClient(ob.insecure_channel(f"127.0.0.1:{port}"), "client-1", "secret", retry=FAST_RETRY)
    try:
        seen: list[str] = []
        with pytest.raises(ob.OpenBankError) as ended:
            async for event in client.watch_payments():
                seen.append(event.cursor)
        assert ended.value.reason == "CONSENT_REVOKED" and seen == ["1", "2"]
        assert payments.watch_cursors == [""]
    finally:
        await client.close()


def test_pkce_matches_the_rfc_7636_example_and_generates_valid_pairs() -> None:
    assert (
        ob.challenge_for("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    pair = ob.Pkce.generate()
    assert 43 <= len(pair.verifier) <= 128 and pair.method == "S256"
    assert pair.challenge == ob.challenge_for(pair.verifier) and len(pair.challenge) == 43
    assert ob.Pkce.generate().verifier != pair.verifier


def test_totp_matches_the_rfc_6238_vector() -> None:
    # RFC 6238 appendix B, SHA-1 seed "12345678901234567890", T=59 s (step 1): 94287082.
    assert totp_code("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", 59 // 30) == "287082"


def test_backoff_is_jittered_bounded_and_honours_retry_info() -> None:
    policy = ob.RetryPolicy(initial_backoff=0.1, max_backoff=1.0, multiplier=2.0)
    assert policy.backoff(1, rng=lambda: 1.0) == pytest.approx(0.1)
    assert policy.backoff(3, rng=lambda: 1.0) == pytest.approx(0.4)
    assert policy.backoff(10, rng=lambda: 1.0) == pytest.approx(1.0)
    assert policy.backoff(3, rng=lambda: 0.0) == 0.0
    assert policy.backoff(1, hint=2.0, rng=lambda: 0.5) == 2.0


def test_money_is_never_a_float() -> None:
    assert ob.money(1250, "EUR").minor_units == 1250
    with pytest.raises(TypeError):
        ob.money(12.5, "EUR")  # type: ignore[arg-type]
    assert len(ob.new_request_id()) <= 64


async def test_a_session_resumes_from_a_stored_refresh_token(fakes) -> None:  # type: ignore[no-untyped-def]
    tokens, payments, port = fakes
    client = ob.OpenBankClient(ob.insecure_channel(f"127.0.0.1:{port}"), "client-1", "secret")
    try:
        stored = ob.TokenSet(access_token="", expires_at=0, refresh_token="stored", consent="consents/c1")
        session = client.session(ob.ConsentTokens(client.channel, client.credentials, stored))
        await session.get_payment("payments/p1")
        assert tokens.grants == [token_pb2.GRANT_TYPE_REFRESH_TOKEN]
        assert payments.tokens_seen == ["Bearer token-1"]
        assert session.tokens.current is not None and session.tokens.current.refresh_token == "refresh-1"
    finally:
        await client.close()
