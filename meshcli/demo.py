"""``openbank-mesh demo``: a partner wallet's whole journey against the running gateway,
printed step by step, with the demo data the local mesh seeded.

Each step raises ``DemoFailed`` with what went wrong; the e2e test runs this module and
checks every step's result.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from meshcli.operator import Operator
from meshcli.seed import load_demo_credentials
from meshcli.targets import mesh_ports
from meshlib import totp
from meshlib.app import DEFAULT_PORTS
from meshlib.errors import MeshError
from meshlib.grpc_errors import decode_rpc_error
from meshlib.money import Amount
from openbank.account.v1 import account_pb2, account_pb2_grpc
from openbank.common.v1 import consent_permission_pb2, money_pb2
from openbank.identity.v1 import consent_pb2, consent_pb2_grpc, token_pb2, token_pb2_grpc
from openbank.payment.v1 import payment_pb2, payment_pb2_grpc
from openbank.settlement.v1 import settlement_admin_pb2, settlement_admin_pb2_grpc, settlement_pb2, settlement_pb2_grpc

TOP_UP_MINOR = 2_500  # EUR 25.00
CONSENT_PER_PAYMENT_MINOR = 50_000  # EUR 500.00
OVER_LIMIT_MINOR = 60_000  # EUR 600.00
EXTERNAL_MINOR = 1_200  # EUR 12.00, to an account at another bank (the simulator settles it)
OTHER_BANK_IBAN = "DE89370400440532013000"


class DemoFailed(Exception):
    """A step did not do what the journey expects."""


@dataclass
class DemoResult:
    """What each step produced, for people (printed) and for tests (kept)."""

    steps: list[tuple[str, str]] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _money(minor: int) -> money_pb2.Money:
    return money_pb2.Money(currency_code="EUR", minor_units=minor)


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


async def client_credentials_token(tokens: Any, partner: dict[str, Any]) -> Any:
    """IssueToken (client credentials) for consent management: the wallet's first call."""
    return await tokens.IssueToken(
        token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
            client_id=partner["client_id"],
            client_secret=partner["client_secret"],
            scopes=["consents:write", "consents:read"],
        ),
        timeout=10,
    )


async def create_payment_consent(
    consents: Any, access_token: str, *, per_payment_minor: int, reads_per_day: int, valid_for: dt.timedelta
) -> tuple[Any, str]:
    """CreateConsent for reads, confirmation of funds and payments, with a PKCE challenge.

    Returns the consent (AWAITING_AUTHORISATION) and the PKCE verifier the code exchange needs.
    """
    verifier, challenge = _pkce()
    request = consent_pb2.CreateConsentRequest(
        request_id=uuid.uuid4().hex,
        permissions=[
            consent_permission_pb2.CONSENT_PERMISSION_READ_ACCOUNTS,
            consent_permission_pb2.CONSENT_PERMISSION_READ_BALANCES,
            consent_permission_pb2.CONSENT_PERMISSION_CONFIRM_FUNDS,
            consent_permission_pb2.CONSENT_PERMISSION_INITIATE_PAYMENTS,
        ],
        per_payment_limit=_money(per_payment_minor),
        reads_per_day=reads_per_day,
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    request.expire_time.FromDatetime(dt.datetime.now(dt.UTC) + valid_for)
    consent = (await consents.CreateConsent(request, metadata=_bearer(access_token), timeout=10)).consent
    return consent, verifier


async def exchange_code(tokens: Any, partner: dict[str, Any], code: str, verifier: str) -> Any:
    """IssueToken (authorization code + PKCE verifier): the consent-bound token."""
    return await tokens.IssueToken(
        token_pb2.IssueTokenRequest(
            grant_type=token_pb2.GRANT_TYPE_AUTHORIZATION_CODE,
            client_id=partner["client_id"],
            client_secret=partner["client_secret"],
            code=code,
            code_verifier=verifier,
        ),
        timeout=10,
    )


async def _expect_error(call: Any) -> Any:
    try:
        await call
    except grpc.aio.AioRpcError as error:
        return error
    raise DemoFailed("the call succeeded although it should have been refused")


async def run_journey(
    data_dir: Path, host: str = "127.0.0.1", ports: dict[str, int] | None = None, say: Any = print
) -> DemoResult:
    """Walk the journey; returns every step's result or raises DemoFailed."""
    ports = dict(DEFAULT_PORTS if ports is None else ports)
    demo = load_demo_credentials(data_dir)
    if demo is None:
        raise DemoFailed(f"no demo data in {data_dir}: start the mesh with `openbank-mesh up` first")
    partner, customer = demo["partners"]["acme"], demo["customers"]["alice"]
    result = DemoResult()

    def step(title: str, detail: str) -> None:
        result.steps.append((title, detail))
        say(f"[{len(result.steps):>2}] {title:<34} {detail}")

    operator = Operator(data_dir, host=host, ports=ports)
    gateway = grpc.aio.insecure_channel(f"{host}:{ports['gateway']}")
    try:
        tokens = token_pb2_grpc.TokenServiceStub(gateway)
        consents = consent_pb2_grpc.ConsentServiceStub(gateway)
        accounts = account_pb2_grpc.AccountServiceStub(gateway)
        payments = payment_pb2_grpc.PaymentServiceStub(gateway)

        # 1. A client-credentials token for consent management.
        client_token = await client_credentials_token(tokens, partner)
        step("token (client credentials)", f"{partner['display_name']}, expires in {client_token.expires_in}s")

        # 2. The consent the wallet asks the customer for.
        consent, verifier = await create_payment_consent(
            consents,
            client_token.access_token,
            per_payment_minor=CONSENT_PER_PAYMENT_MINOR,
            reads_per_day=100,
            valid_for=dt.timedelta(days=90),
        )
        step("consent created", f"{consent.name} AWAITING_AUTHORISATION, per payment ≤ EUR 500.00")

        # 3. The customer authorises it in the bank's app with password + one-time code.
        authorised = await _authorise(operator, consent.name, customer)
        step("customer SCA authorisation", f"{customer['username']} chose {customer['account']}")

        # 4. The wallet exchanges the code (PKCE) for a consent-bound token.
        bound = await exchange_code(tokens, partner, authorised.authorization_code, verifier)
        access = (*_bearer(bound.access_token), ("x-fapi-customer-ip-address", "198.51.100.7"))
        step("code exchange (PKCE)", f"access token bound to {bound.consent}, refresh token issued")

        # 5. Accounts and balance.
        listed = await accounts.ListAccounts(account_pb2.ListAccountsRequest(), metadata=access, timeout=10)
        balance = (
            await accounts.GetBalance(
                account_pb2.GetBalanceRequest(account=customer["account"]), metadata=access, timeout=10
            )
        ).balance
        available = Amount(balance.available.currency_code, balance.available.minor_units)
        step(
            "accounts and balance",
            f"{len(listed.accounts)} account(s), {listed.accounts[0].display_number}, available {available.format()}",
        )
        result.values["available_before"] = balance.available.minor_units

        # 6. Confirmation of funds: yes or no, never the balance.
        confirmed = await accounts.ConfirmFunds(
            account_pb2.ConfirmFundsRequest(account=customer["account"], amount=_money(TOP_UP_MINOR)),
            metadata=access,
            timeout=10,
        )
        step("confirm funds (EUR 25.00)", "yes" if confirmed.funds_available else "no")
        if not confirmed.funds_available:
            raise DemoFailed("the demo customer has no funds")

        # 7. A wallet top-up, watched to SETTLED on the payment stream.
        watch = payments.WatchPayments(
            payment_pb2.WatchPaymentsRequest(include_snapshot=True), metadata=_bearer(bound.access_token), timeout=30
        )
        created = (
            await payments.CreatePayment(
                payment_pb2.CreatePaymentRequest(
                    request_id=uuid.uuid4().hex,
                    debtor_account=customer["account"],
                    creditor_wallet=partner["partner"],
                    amount=_money(TOP_UP_MINOR),
                    type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
                    remittance_information="demo top-up",
                ),
                metadata=access,
                timeout=10,
            )
        ).payment
        states = await _watch_until_final(watch, created.name)
        watch.cancel()
        final = states[-1] if states else payment_pb2.PaymentState.Name(created.state).removeprefix("PAYMENT_STATE_")
        step("wallet top-up (EUR 25.00)", f"{created.name}: {' -> '.join(states) or final}")
        if final != "SETTLED":
            raise DemoFailed(f"the top-up ended {final}")
        result.values["top_up"] = created.name

        # 7b. A payment to another bank, through the clearing scheme (the simulator), to SETTLED.
        if "schemesim" in ports:
            sent = (
                await payments.CreatePayment(
                    payment_pb2.CreatePaymentRequest(
                        request_id=uuid.uuid4().hex,
                        debtor_account=customer["account"],
                        creditor_external=payment_pb2.ExternalCreditor(
                            iban=OTHER_BANK_IBAN, name="Erika Mustermann", agent_bic="COBADEFFXXX"
                        ),
                        amount=_money(EXTERNAL_MINOR),
                        type=payment_pb2.PAYMENT_TYPE_EXTERNAL_TRANSFER,
                        remittance_information="demo payment to another bank",
                    ),
                    metadata=access,
                    timeout=10,
                )
            ).payment
            external = await _settled_by_the_scheme(payments, sent.name, access)
            step("payment to another bank (EUR 12.00)", f"{sent.name}: {OTHER_BANK_IBAN} {external}")
            if external != "SETTLED":
                raise DemoFailed(f"the payment to another bank ended {external}")
            result.values["external"] = sent.name

        # 8. Over the consent's per-payment limit: refused before any money moves.
        refused = await _expect_error(
            payments.CreatePayment(
                payment_pb2.CreatePaymentRequest(
                    request_id=uuid.uuid4().hex,
                    debtor_account=customer["account"],
                    creditor_wallet=partner["partner"],
                    amount=_money(OVER_LIMIT_MINOR),
                    type=payment_pb2.PAYMENT_TYPE_WALLET_TOP_UP,
                ),
                metadata=access,
                timeout=10,
            )
        )
        reason = decode_rpc_error(refused).reason
        step("over-limit payment (EUR 600.00)", f"refused: {refused.code().name} {reason}")
        result.values["over_limit_reason"] = reason

        # 9. The rate limit: token requests from one address, until the gateway says stop.
        limited = await _hit_rate_limit(tokens, partner)
        step("rate limit reached", limited)

        # 10. The customer revokes the consent at the bank; the next call is refused.
        await consent_pb2_grpc.ConsentServiceStub(operator.channel("identity")).CustomerRevokeConsent(
            consent_pb2.CustomerRevokeConsentRequest(
                request_id=uuid.uuid4().hex, name=consent.name, customer=customer["customer"]
            ),
            metadata=await operator.bank_app_metadata(),
            timeout=10,
        )
        revoked = await _refused_soon(accounts, customer["account"], access)
        step("consent revoked by the customer", f"next call refused: {revoked}")
        result.values["revoked_reason"] = revoked

        # 11. The operator closes the window; the partner reads its net position.
        admin = await operator.metadata()
        closed = await settlement_admin_pb2_grpc.SettlementAdminServiceStub(
            operator.channel("settlement")
        ).CloseSettlementWindow(
            settlement_admin_pb2.CloseSettlementWindowRequest(request_id=uuid.uuid4().hex, currency_code="EUR"),
            metadata=admin,
            timeout=10,
        )
        # Step 9 spent this address's token allowance: wait as the gateway says, as a wallet would.
        settlement_token = await _after_rate_limit(
            lambda: tokens.IssueToken(
                token_pb2.IssueTokenRequest(
                    grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                    client_id=partner["client_id"],
                    client_secret=partner["client_secret"],
                    scopes=["settlement:read"],
                ),
                timeout=10,
            )
        )
        report = (
            await settlement_pb2_grpc.SettlementServiceStub(gateway).GetSettlementReport(
                settlement_pb2.GetSettlementReportRequest(window=closed.closed_window.name),
                metadata=_bearer(settlement_token.access_token),
                timeout=10,
            )
        ).report
        own = next((row for row in report.net_positions if row.participant == partner["participant"]), None)
        net = Amount(own.net.currency_code, own.net.minor_units).format() if own else "EUR 0.00"
        step("window closed, net position", f"{closed.closed_window.name}: {partner['display_name']} net {net}")
        result.values["net_minor"] = own.net.minor_units if own else 0
        return result
    finally:
        await gateway.close()
        await operator.close()


async def _settled_by_the_scheme(payments: Any, name: str, access: Any, timeout: float = 30.0) -> str:
    """The payment's final state once the scheme answered (it waits in SETTLEMENT_IN_PROCESS)."""
    deadline = time.monotonic() + timeout
    while True:
        payment = (await payments.GetPayment(payment_pb2.GetPaymentRequest(name=name), metadata=access)).payment
        state = payment_pb2.PaymentState.Name(payment.state).removeprefix("PAYMENT_STATE_")
        if state in ("SETTLED", "REJECTED") or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.3)


async def _authorise(operator: Operator, consent: str, customer: dict[str, Any]) -> Any:
    """AuthoriseConsent with a fresh one-time code (each code works once: try the next step)."""
    stub = consent_pb2_grpc.ConsentServiceStub(operator.channel("identity"))
    seed = totp.from_base32(customer["totp_secret"])
    metadata = await operator.bank_app_metadata()
    deadline = time.time() + 40
    while True:
        step_now = totp.time_step(time.time())
        for candidate in (step_now, step_now + 1):
            try:
                return await stub.AuthoriseConsent(
                    consent_pb2.AuthoriseConsentRequest(
                        request_id=uuid.uuid4().hex,
                        name=consent,
                        username=customer["username"],
                        password=customer["password"],
                        one_time_code=totp.hotp(seed, candidate),
                        accounts=[customer["account"]],
                    ),
                    metadata=metadata,
                    timeout=10,
                )
            except grpc.aio.AioRpcError as error:
                if decode_rpc_error(error).reason != "SCA_FAILED" or time.time() > deadline:
                    raise
        await asyncio.sleep(max(0.5, 30 - time.time() % 30))  # both codes used: wait for the next step


async def _watch_until_final(watch: Any, payment: str) -> list[str]:
    states: list[str] = []
    async for message in watch:
        if message.event.payment != payment:
            continue
        state = payment_pb2.PaymentState.Name(message.event.state).removeprefix("PAYMENT_STATE_")
        if not states or states[-1] != state:
            states.append(state)
        if state in ("SETTLED", "REJECTED", "CANCELLED"):
            break
    return states


async def _after_rate_limit(call: Any, attempts: int = 5) -> Any:
    """``call()``, again after the wait the gateway names (``ratelimit-reset``) while it answers
    RESOURCE_EXHAUSTED."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or attempt == attempts:
                raise
            trailers = dict(error.trailing_metadata() or ())
            try:
                delay = float(trailers.get("ratelimit-reset", "1"))
            except ValueError:
                delay = 1.0
            await asyncio.sleep(min(max(delay, 0.1), 5.0))
    raise AssertionError("unreachable")


async def _hit_rate_limit(tokens: Any, partner: dict[str, Any]) -> str:
    for attempt in range(1, 200):
        call = tokens.IssueToken(
            token_pb2.IssueTokenRequest(
                grant_type=token_pb2.GRANT_TYPE_CLIENT_CREDENTIALS,
                client_id=partner["client_id"],
                client_secret="wrong-on-purpose",
            ),
            timeout=10,
        )
        try:
            await call
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                failure = decode_rpc_error(error)
                trailers = dict(error.trailing_metadata() or ())
                return (
                    f"call {attempt}: RESOURCE_EXHAUSTED {failure.reason}, "
                    f"ratelimit-reset {trailers.get('ratelimit-reset', '?')}s"
                )
    raise DemoFailed("no rate limit after 200 calls")


async def _refused_soon(accounts: Any, account: str, access: Any) -> str:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            await accounts.GetBalance(account_pb2.GetBalanceRequest(account=account), metadata=access, timeout=10)
        except grpc.aio.AioRpcError as error:
            return f"{error.code().name} {decode_rpc_error(error).reason}"
        await asyncio.sleep(0.1)
    raise DemoFailed("the revoked consent still worked after two seconds")


async def run_demo(data_dir: Path, host: str, base_port: int | None = None) -> int:
    """The CLI entry point: print the journey; non-zero exit if a step fails."""
    print("A partner wallet's journey through OpenBank Mesh\n")
    try:
        await run_journey(data_dir, host, mesh_ports(data_dir, base_port))
    except DemoFailed as failure:
        print(f"\ndemo failed: {failure}")
        return 1
    except grpc.aio.AioRpcError as error:
        failure = decode_rpc_error(error)
        hint = " (is the mesh running? `openbank-mesh up`)" if error.code() == grpc.StatusCode.UNAVAILABLE else ""
        print(f"\ndemo failed: {error.code().name} {failure.reason}: {failure.message}{hint}")
        return 1
    except MeshError as error:  # e.g. no token: identity unreachable
        print(f"\ndemo failed: {error.reason}: {error} (is the mesh running? `openbank-mesh up`)")
        return 1
    print("\ndone: every step behaved as the contract says")
    return 0
