"""The SDK against the real mesh: five processes (LocalMesh) with demo data, through the
gateway only. The customer's side of each consent is played by the sandbox bank app."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import openbank_sdk as ob
import pytest
import pytest_asyncio
from openbank_sdk.sandbox import SandboxBankApp

from meshcli.mesh import LocalMesh
from meshcli.operator import Operator
from meshcli.seed import seed_demo_data
from openbank.payment.v1 import payment_pb2
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

EXAMPLE_WALLET = Path(__file__).resolve().parents[2] / "examples" / "python-wallet" / "wallet.py"
GATEWAY_LIMITS = Path(__file__).resolve().parents[2] / "gateway" / "ratelimits.yaml"
CUSTOMER_IP = "203.0.113.7"  # FAPI: the customer is present, so reads are not capped per day


def _tight_limits(target: Path) -> Path:
    """The gateway's limits, with the silver tier (partner zeta) allowed 2 settlement reads a minute."""
    text = GATEWAY_LIMITS.read_text()
    lines = [
        "    settlement: {rate: 1,   per: minute, burst: 2}" if line.startswith("    settlement: {rate: 10,") else line
        for line in text.splitlines()
    ]
    assert lines != text.splitlines(), "the silver settlement limit moved: update this test"
    target.write_text("\n".join(lines) + "\n")
    return target


class Mesh:
    """The running mesh, its demo data and ready-made SDK objects."""

    def __init__(self, mesh: LocalMesh, demo: dict[str, Any]) -> None:
        self.mesh = mesh
        self.demo = demo
        self.gateway = f"127.0.0.1:{mesh.ports['gateway']}"
        secrets = json.loads((mesh.data_dir / "internal-clients.json").read_text())
        self.bank_app = SandboxBankApp(
            ob.insecure_channel(f"127.0.0.1:{mesh.ports['identity']}"), "bank-app", secrets["bank-app"]
        )

    def client(self, partner: str = "acme", **options: Any) -> ob.OpenBankClient:
        credentials = self.demo["partners"][partner]
        options.setdefault("customer_ip_address", CUSTOMER_IP)
        return ob.OpenBankClient(
            ob.insecure_channel(self.gateway), credentials["client_id"], credentials["client_secret"], **options
        )

    async def authorised_session(
        self, client: ob.OpenBankClient, customer: str = "alice", **consent: Any
    ) -> ob.ConsentSession:
        person = self.demo["customers"][customer]
        pending = await client.create_consent(**consent)
        assert pending.consent.state == 1  # AWAITING_AUTHORISATION
        answer = await self.bank_app.authorise(
            pending.name,
            username=person["username"],
            password=person["password"],
            totp_secret=person["totp_secret"],
            accounts=[person["account"]],
        )
        return await client.exchange_code(answer.authorization_code, pending.pkce.verifier)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def mesh(tmp_path_factory) -> AsyncIterator[Mesh]:  # type: ignore[no-untyped-def]
    base = tmp_path_factory.mktemp("sdk-mesh")
    ports = {name: free_port() for name in ("identity", "account", "settlement", "payment", "gateway")}
    limits = _tight_limits(base / "ratelimits.yaml")
    running = LocalMesh(base / "data", ports=ports, quiet=True, extra_env={"OBM_RATELIMIT_CONFIG_FILE": str(limits)})
    await running.start()
    operator = Operator(running.data_dir, ports=ports)
    try:
        demo = await seed_demo_data(operator, say=lambda _: None)
    finally:
        await operator.close()
    yield Mesh(running, demo)
    await running.stop(grace=10)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def acme(mesh: Mesh) -> AsyncIterator[ob.OpenBankClient]:
    client = mesh.client("acme")
    yield client
    await client.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def alice(mesh: Mesh, acme: ob.OpenBankClient) -> ob.ConsentSession:
    return await mesh.authorised_session(acme, "alice", per_payment_limit=ob.money(50_000, "EUR"))


async def test_client_credentials_token_is_issued_cached_and_renewed(mesh: Mesh) -> None:
    client = mesh.client("acme", refresh_margin=0)
    try:
        first = await client.tokens.token()
        assert await client.tokens.token() == first
        current = client.tokens.current
        assert current is not None and set(current.scopes) == set(ob.PARTNER_WIDE_SCOPES) and not current.consent
        renewed = await client.tokens.refresh()
        assert renewed.access_token != first
        assert (await client.jwks()).keys
        with pytest.raises(ob.NotFound):  # the renewed token is accepted by the gateway
            await client.get_consent("consents/unknown")
    finally:
        await client.close()


async def test_consent_flow_gives_a_consent_bound_session(mesh: Mesh, acme: ob.OpenBankClient, alice) -> None:  # type: ignore[no-untyped-def]
    consent = await acme.get_consent(alice.consent)
    assert consent.state == 2  # AUTHORISED
    assert list(consent.accounts) == [mesh.demo["customers"]["alice"]["account"]]
    accounts = await ob.collect(alice.accounts())
    assert [a.name for a in accounts] == list(consent.accounts)
    balance = await alice.balance(accounts[0].name)
    assert balance.available.currency_code == "EUR" and balance.available.minor_units > 0
    assert await alice.confirm_funds(accounts[0].name, ob.money(100, "EUR")) is True
    assert await alice.confirm_funds(accounts[0].name, ob.money(10**12, "EUR")) is False
    assert acme.last_headers.get("ratelimit-limit")  # the gateway's rate-limit headers reach the SDK


async def test_refresh_rotates_and_a_replayed_refresh_token_revokes_the_family(mesh: Mesh) -> None:
    client = mesh.client("zeta")
    try:
        session = await mesh.authorised_session(client, "bob")
        original = session.tokens.current
        assert original is not None and original.refresh_token
        rotated = await session.tokens.refresh()
        assert rotated.refresh_token != original.refresh_token
        assert [a.name async for a in session.accounts()] == [mesh.demo["customers"]["bob"]["account"]]
        replay = ob.ConsentTokens(client.channel, client.credentials, original)
        with pytest.raises(ob.InvalidArgument) as caught:
            await replay.refresh()
        assert caught.value.reason == "REFRESH_TOKEN_REUSED"
        with pytest.raises(ob.InvalidArgument) as revoked:
            await session.tokens.refresh()  # the rotated one died with its family
        assert revoked.value.reason == "INVALID_GRANT"
        assert await _revoked_within(session, seconds=3.0) == "TOKEN_REVOKED"
    finally:
        await client.close()


async def _revoked_within(session: ob.ConsentSession, seconds: float) -> str:
    """The reason the session's access token is refused with, once revocation propagated."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            await ob.collect(session.accounts())
        except ob.Unauthenticated as error:
            return error.reason
        if asyncio.get_running_loop().time() > deadline:
            return "still accepted"
        await asyncio.sleep(0.1)


async def test_typed_errors_carry_reason_domain_and_details(mesh: Mesh, acme: ob.OpenBankClient, alice) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ob.NotFound) as not_found:
        await alice.balance("accounts/does-not-exist")
    assert not_found.value.reason == "RESOURCE_NOT_FOUND" and not_found.value.domain
    with pytest.raises(ob.InvalidArgument) as malformed:
        await alice.account("not-a-name")
    assert malformed.value.reason == "FIELD_INVALID"
    assert [v.field for v in malformed.value.field_violations] == ["name"]
    narrow = mesh.client("acme", scopes=["consents:read"])
    try:
        with pytest.raises(ob.PermissionDenied) as scope:
            await narrow.create_consent()
        assert scope.value.reason == "INSUFFICIENT_SCOPE"
    finally:
        await narrow.close()
    with pytest.raises(ob.Unauthenticated) as bad_client:
        await ob.ClientCredentialsTokens(
            acme.channel, ob.ClientCredentials("nobody", "wrong"), ["consents:read"]
        ).token()
    assert bad_client.value.reason == "INVALID_CLIENT"


async def test_rate_limited_carries_retry_after_and_quota(mesh: Mesh) -> None:
    client = mesh.client("zeta")  # silver tier: 2 settlement reads a minute in this mesh
    try:
        with pytest.raises(ob.RateLimited) as caught:
            for _ in range(5):
                await ob.collect(client.windows())
        error = caught.value
        assert error.reason == "RATE_LIMIT_EXCEEDED"
        assert error.retry_after is not None and 0 < error.retry_after <= 60
        assert error.quota_violations
        assert error.trailers.get("ratelimit-remaining") == "0"
    finally:
        await client.close()


async def test_pagination_helper_walks_every_page(mesh: Mesh, acme: ob.OpenBankClient, alice) -> None:  # type: ignore[no-untyped-def]
    account = mesh.demo["customers"]["alice"]["account"]
    for number in range(3):  # a few more transactions on the account
        await alice.create_payment(
            account, ob.money(100 + number, "EUR"), creditor_wallet=mesh.demo["partners"]["acme"]["partner"]
        )
    one_by_one = [t.name async for t in alice.transactions(account, page_size=1)]
    at_once = [t.name async for t in alice.transactions(account, page_size=500)]
    assert len(one_by_one) >= 4 and one_by_one == at_once
    payments = [p.name async for p in alice.list_payments(page_size=1)]
    assert len(payments) >= 3 and len(set(payments)) == len(payments)
    windows = [w.name async for w in acme.windows(page_size=1)]
    assert windows == [w.name async for w in acme.windows()]


async def test_payments_create_get_list_cancel_and_idempotency(mesh: Mesh, alice) -> None:  # type: ignore[no-untyped-def]
    account = mesh.demo["customers"]["alice"]["account"]
    wallet = mesh.demo["partners"]["acme"]["partner"]
    key = ob.new_request_id()
    payment = await alice.create_payment(account, ob.money(1_000, "EUR"), creditor_wallet=wallet, request_id=key)
    assert payment.state == payment_pb2.PAYMENT_STATE_SETTLED and payment.iso20022_status == "ACSC"
    replay = await alice.create_payment(account, ob.money(1_000, "EUR"), creditor_wallet=wallet, request_id=key)
    assert replay.name == payment.name
    with pytest.raises(ob.AlreadyExists) as reused:
        await alice.create_payment(account, ob.money(2_000, "EUR"), creditor_wallet=wallet, request_id=key)
    assert reused.value.reason == "REQUEST_ID_REUSED"
    assert (await alice.get_payment(payment.name)).name == payment.name
    assert payment.name in [p.name async for p in alice.list_payments()]
    with pytest.raises(ob.FailedPrecondition) as settled:
        await alice.cancel_payment(payment.name)
    assert settled.value.reason == "PAYMENT_NOT_CANCELLABLE"
    with pytest.raises(ob.FailedPrecondition) as over_limit:  # the consent allows 500.00 EUR a payment
        await alice.create_payment(account, ob.money(60_000, "EUR"), creditor_wallet=wallet)
    assert over_limit.value.reason == "PAYMENT_LIMIT_EXCEEDED"
    assert over_limit.value.metadata["limit"] == "consent"


async def test_refund_a_payment_in_parts_with_the_partner_wide_client(
    mesh: Mesh, acme: ob.OpenBankClient, alice
) -> None:  # type: ignore[no-untyped-def]
    account = mesh.demo["customers"]["alice"]["account"]
    wallet = mesh.demo["partners"]["acme"]["partner"]
    payment = await alice.create_payment(account, ob.money(1_000, "EUR"), creditor_wallet=wallet)
    part = await acme.refund_payment(payment.name, amount=ob.money(400, "EUR"), reason="CUST")
    rest = await acme.refund_payment(payment.name, reason="DUPL")  # all that is left
    assert [r.state for r in (part, rest)] == [payment_pb2.PAYMENT_STATE_SETTLED] * 2
    assert (part.refund_of, part.type, rest.amount.minor_units) == (payment.name, payment_pb2.PAYMENT_TYPE_REFUND, 600)
    shown = await alice.get_payment(payment.name)
    assert list(shown.refunds) == [part.name, rest.name] and shown.refunded_amount.minor_units == 1_000
    with pytest.raises(ob.FailedPrecondition) as exhausted:
        await acme.refund_payment(payment.name, amount=ob.money(1, "EUR"))
    assert exhausted.value.reason == "REFUND_AMOUNT_EXCEEDED" and exhausted.value.metadata["refundable_minor"] == "0"


async def _eventually(condition: Callable[[], bool], seconds: float) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


async def test_watch_payments_streams_events_and_resumes_from_a_cursor(
    mesh: Mesh, acme: ob.OpenBankClient, alice
) -> None:  # type: ignore[no-untyped-def]
    account = mesh.demo["customers"]["alice"]["account"]
    wallet = mesh.demo["partners"]["acme"]["partner"]
    events: list[payment_pb2.PaymentEvent] = []

    async def watch() -> None:
        async for event in acme.watch_payments(include_snapshot=True):
            events.append(event)

    def settled(name: str) -> bool:
        return any(e.payment == name and e.state == payment_pb2.PAYMENT_STATE_SETTLED for e in events)

    watcher = asyncio.create_task(watch())
    # An empty cursor streams from now, and nothing says when the stream is subscribed: pay
    # until one payment's whole life shows up on it.
    payment = None
    for _ in range(5):
        candidate = await alice.create_payment(account, ob.money(500, "EUR"), creditor_wallet=wallet)
        if await _eventually(lambda name=candidate.name: settled(name), 3.0):
            payment = candidate
            break
    watcher.cancel()
    assert payment is not None, "no payment event arrived on the stream"
    mine = [e for e in events if e.payment == payment.name]
    assert mine[0].state != payment_pb2.PAYMENT_STATE_SETTLED  # the earlier states came first
    assert mine[-1].state == payment_pb2.PAYMENT_STATE_SETTLED and mine[-1].snapshot.name == payment.name
    assert len({e.cursor for e in events}) == len(events) >= 2
    # Resume after the first event: exactly the events after it, in the same order.
    resumed: list[str] = []
    async with asyncio.timeout(15):
        async for event in acme.watch_payments(after_cursor=events[0].cursor):
            resumed.append(event.cursor)
            if len(resumed) == len(events) - 1:
                break
    assert resumed == [e.cursor for e in events[1:]]


async def test_the_example_wallet_runs_its_demo_journey(mesh: Mesh) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE_WALLET),
        "--demo",
        "--demo-data-dir",
        str(mesh.mesh.data_dir),
        "--demo-partner",
        "zeta",
        "--demo-customer",
        "bob",
        "--gateway",
        mesh.gateway,
        "--bank-app-endpoint",
        f"127.0.0.1:{mesh.mesh.ports['identity']}",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output = (await asyncio.wait_for(process.communicate(), 60))[0].decode()
    assert process.returncode == 0, output
    assert "consents/" in output and "PAYMENT_STATE_SETTLED" in output and "5. settled" in output


async def test_partner_events_stream_resumes_from_the_stored_cursor(
    mesh: Mesh, acme: ob.OpenBankClient, alice, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    page = await ob.PartnerEvents(acme).poll(max_events=1000)
    assert page.events and page.events[0].cursor == "1"  # alice's authorisation, at least
    store = ob.FileCursorStore(tmp_path / "events.cursor")
    store.save("0")  # from the beginning of acme's log
    seen = []
    async with asyncio.timeout(15):
        async for event in ob.PartnerEvents(acme, store).stream():
            seen.append(event)
            if len(seen) == min(2, len(page.events)):
                break
    assert [e.event_id for e in seen] == [e.event_id for e in page.events[: len(seen)]]
    # The last event was handed out but never confirmed handled (the loop broke inside it):
    # the stored cursor is the one before it, so a restarted wallet gets it again.
    assert store.load() == (seen[-2].cursor if len(seen) > 1 else "0")
    async with asyncio.timeout(15):
        async for event in ob.PartnerEvents(acme, ob.FileCursorStore(tmp_path / "events.cursor")).stream():
            assert event.event_id == seen[-1].event_id
            break
