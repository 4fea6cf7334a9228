"""`openbank-mesh demo` against a mesh started the way `make up` starts it: every step of a
wallet's journey, checked."""

from __future__ import annotations

import pytest
import pytest_asyncio

from meshcli.demo import run_journey
from meshcli.mesh import LocalMesh
from meshcli.operator import Operator
from meshcli.seed import seed_demo_data
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def seeded_mesh(tmp_path_factory):  # type: ignore[no-untyped-def]
    data_dir = tmp_path_factory.mktemp("demo") / "data"
    ports = {name: free_port() for name in ("identity", "account", "settlement", "schemesim", "payment", "gateway")}
    mesh = LocalMesh(data_dir, ports=ports, quiet=True)
    await mesh.start()
    operator = Operator(data_dir, ports=ports)
    await seed_demo_data(operator, say=lambda _: None)
    await operator.close()
    yield mesh
    await mesh.stop(grace=10)


async def test_the_demo_journey_behaves_as_the_contract_says(seeded_mesh) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    result = await run_journey(seeded_mesh.data_dir, ports=seeded_mesh.ports, say=lines.append)
    titles = [title for title, _ in result.steps]
    assert titles == [
        "token (client credentials)",
        "consent created",
        "customer SCA authorisation",
        "code exchange (PKCE)",
        "accounts and balance",
        "confirm funds (EUR 25.00)",
        "wallet top-up (EUR 25.00)",
        "payment to another bank (EUR 12.00)",
        "over-limit payment (EUR 600.00)",
        "rate limit reached",
        "consent revoked by the customer",
        "window closed, net position",
    ]
    details = dict(result.steps)
    assert details["confirm funds (EUR 25.00)"] == "yes"
    assert details["wallet top-up (EUR 25.00)"].endswith("SETTLED")
    assert details["payment to another bank (EUR 12.00)"].endswith("SETTLED")
    assert result.values["over_limit_reason"] == "PAYMENT_LIMIT_EXCEEDED"
    assert "RESOURCE_EXHAUSTED RATE_LIMIT_EXCEEDED" in details["rate limit reached"]
    assert result.values["revoked_reason"].split()[1] == "CONSENT_REVOKED"  # embedded default: as with Redis
    # The bank paid the wallet the top-up in this window: the wallet is owed exactly that.
    assert result.values["net_minor"] == 2_500
    assert len(lines) == len(result.steps)


async def test_a_customer_cannot_put_someone_elses_account_into_a_consent(seeded_mesh) -> None:  # type: ignore[no-untyped-def]
    import grpc

    from meshcli.demo import _authorise, _pkce
    from meshcli.seed import load_demo_credentials
    from meshlib.grpc_errors import decode_rpc_error
    from openbank.common.v1 import consent_permission_pb2
    from openbank.identity.v1 import consent_pb2, consent_pb2_grpc, token_pb2, token_pb2_grpc

    demo = load_demo_credentials(seeded_mesh.data_dir)
    partner, alice, bob = demo["partners"]["zeta"], demo["customers"]["alice"], demo["customers"]["bob"]
    operator = Operator(seeded_mesh.data_dir, ports=seeded_mesh.ports)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{seeded_mesh.ports['gateway']}") as gateway:
            token = await token_pb2_grpc.TokenServiceStub(gateway).IssueToken(
                token_pb2.IssueTokenRequest(
                    grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                    client_id=partner["client_id"],
                    client_secret=partner["client_secret"],
                    scopes=["consents:write"],
                ),
                timeout=10,
            )
            _, challenge = _pkce()
            consent = (
                await consent_pb2_grpc.ConsentServiceStub(gateway).CreateConsent(
                    _with_expiry(
                        consent_pb2.CreateConsentRequest(
                            request_id="steal-1",
                            permissions=[consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES],
                            code_challenge=challenge,
                            code_challenge_method="S256",
                        )
                    ),
                    metadata=(("authorization", f"Bearer {token.access_token}"),),
                    timeout=10,
                )
            ).consent
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await _authorise(operator, consent.name, {**alice, "account": bob["account"]})
        failure = decode_rpc_error(raised.value)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert failure.violations[0].field == "accounts"
    finally:
        await operator.close()


def _with_expiry(request):  # type: ignore[no-untyped-def]
    import datetime as dt

    request.expire_time.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    return request
